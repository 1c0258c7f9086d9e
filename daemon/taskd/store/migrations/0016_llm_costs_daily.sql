-- What LLM calls cost per UTC day, kept beside taskd.llm_calls so that the console's daily
-- costs (GET /api/costs/daily, up to 400 days) read one row per day and group instead of every
-- call: for each of the four dimensions a report groups by (task, key: the concurrency key,
-- model, tag), one row per day and group ('' for a call without a key or without tags; a call
-- with several tags counts in each), and one row per day of every call (dimension 'all', group
-- ''). It holds every sum GET /api/costs returns (tokens of each kind, dollars, the calls with a
-- price and those with tokens but none), so that a cost report of whole UTC days reads the
-- daily rows and sums only the calls of the partial days at its two ends (LLMStore.costs).
-- Kept equal to the sums of taskd.llm_calls by statement triggers: a statement of inserts adds
-- its calls in one upsert, the pruner's deletes take theirs away, an UPDATE moves them.
CREATE TABLE taskd.llm_costs_daily (
    dimension text NOT NULL CHECK (dimension IN ('all', 'task', 'key', 'model', 'tag')),
    day date NOT NULL,
    grp text NOT NULL,
    calls bigint NOT NULL,
    input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL,
    cost_usd numeric NOT NULL,
    cache_write_tokens bigint NOT NULL DEFAULT 0,
    cache_read_tokens bigint NOT NULL DEFAULT 0,
    priced_calls bigint NOT NULL DEFAULT 0,
    unpriced_calls bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (dimension, day, grp)
);
COMMENT ON TABLE taskd.llm_costs_daily IS
    'taskd.llm_calls summed per dimension (task, key, model, tag; all: every call), UTC day of '
    'started_at and group ('''' for no key or no tag); kept by triggers on taskd.llm_calls.';

COMMENT ON COLUMN taskd.llm_costs_daily.priced_calls IS
    'Calls with a price (cost_usd not NULL).';
COMMENT ON COLUMN taskd.llm_costs_daily.unpriced_calls IS
    'Calls with tokens but no price (cost_usd NULL).';

-- A report by tag reads the daily rows only if no call of its days has an empty tag (the
-- daily rows count those with the calls without tags, group ''): this finds one at once.
CREATE INDEX llm_calls_empty_tag_idx ON taskd.llm_calls (started_at) WHERE '' = ANY (tags);

CREATE FUNCTION taskd.llm_costs_daily_add() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    -- in key order: two statements adding to the same rows lock them in the same order
    INSERT INTO taskd.llm_costs_daily AS d (
        dimension, day, grp, calls, input_tokens, output_tokens, cost_usd,
        cache_write_tokens, cache_read_tokens, priced_calls, unpriced_calls)
    SELECT s.dimension, s.day, s.grp, count(*), sum(s.input_tokens), sum(s.output_tokens),
           coalesce(sum(s.cost_usd), 0), sum(s.cache_write_tokens), sum(s.cache_read_tokens),
           count(s.cost_usd),
           count(*) FILTER (
               WHERE s.cost_usd IS NULL
                 AND s.input_tokens + s.output_tokens + s.cache_write_tokens
                     + s.cache_read_tokens > 0)
      FROM (SELECT g.dimension, (c.started_at AT TIME ZONE 'UTC')::date AS day, g.grp,
                   c.input_tokens, c.output_tokens, c.cache_write_tokens, c.cache_read_tokens,
                   c.cost_usd
              FROM added c
             CROSS JOIN LATERAL (
                 VALUES ('all', ''), ('task', c.task_id),
                        ('key', coalesce(c.concurrency_key, '')), ('model', c.model)
                 UNION ALL
                 SELECT 'tag', t.tag FROM unnest(c.tags) AS t (tag)
                 UNION ALL
                 SELECT 'tag', '' WHERE c.tags = '{}'
             ) AS g (dimension, grp)) AS s
     GROUP BY 1, 2, 3
     ORDER BY 1, 2, 3
    ON CONFLICT (dimension, day, grp) DO UPDATE
       SET calls = d.calls + excluded.calls,
           input_tokens = d.input_tokens + excluded.input_tokens,
           output_tokens = d.output_tokens + excluded.output_tokens,
           cost_usd = d.cost_usd + excluded.cost_usd,
           cache_write_tokens = d.cache_write_tokens + excluded.cache_write_tokens,
           cache_read_tokens = d.cache_read_tokens + excluded.cache_read_tokens,
           priced_calls = d.priced_calls + excluded.priced_calls,
           unpriced_calls = d.unpriced_calls + excluded.unpriced_calls;
    RETURN NULL;
END;
$$;

CREATE FUNCTION taskd.llm_costs_daily_remove() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    UPDATE taskd.llm_costs_daily d
       SET calls = d.calls - r.calls,
           input_tokens = d.input_tokens - r.input_tokens,
           output_tokens = d.output_tokens - r.output_tokens,
           cost_usd = d.cost_usd - r.cost_usd,
           cache_write_tokens = d.cache_write_tokens - r.cache_write_tokens,
           cache_read_tokens = d.cache_read_tokens - r.cache_read_tokens,
           priced_calls = d.priced_calls - r.priced_calls,
           unpriced_calls = d.unpriced_calls - r.unpriced_calls
      FROM (SELECT s.dimension, s.day, s.grp, count(*) AS calls,
                   sum(s.input_tokens) AS input_tokens, sum(s.output_tokens) AS output_tokens,
                   coalesce(sum(s.cost_usd), 0) AS cost_usd,
                   sum(s.cache_write_tokens) AS cache_write_tokens,
                   sum(s.cache_read_tokens) AS cache_read_tokens,
                   count(s.cost_usd) AS priced_calls,
                   count(*) FILTER (
                       WHERE s.cost_usd IS NULL
                         AND s.input_tokens + s.output_tokens + s.cache_write_tokens
                             + s.cache_read_tokens > 0) AS unpriced_calls
              FROM (SELECT g.dimension, (c.started_at AT TIME ZONE 'UTC')::date AS day, g.grp,
                           c.input_tokens, c.output_tokens, c.cache_write_tokens,
                           c.cache_read_tokens, c.cost_usd
                      FROM removed c
                     CROSS JOIN LATERAL (
                         VALUES ('all', ''), ('task', c.task_id),
                                ('key', coalesce(c.concurrency_key, '')), ('model', c.model)
                         UNION ALL
                         SELECT 'tag', t.tag FROM unnest(c.tags) AS t (tag)
                         UNION ALL
                         SELECT 'tag', '' WHERE c.tags = '{}'
                     ) AS g (dimension, grp)) AS s
             GROUP BY 1, 2, 3
             ORDER BY 1, 2, 3) AS r
     WHERE (d.dimension, d.day, d.grp) = (r.dimension, r.day, r.grp);
    DELETE FROM taskd.llm_costs_daily d
     WHERE d.calls <= 0
       AND (d.dimension, d.day) IN (
           SELECT g.dimension, (c.started_at AT TIME ZONE 'UTC')::date
             FROM removed c
            CROSS JOIN (VALUES ('all'), ('task'), ('key'), ('model'), ('tag')) AS g (dimension));
    RETURN NULL;
END;
$$;

CREATE TRIGGER llm_costs_daily_add AFTER INSERT ON taskd.llm_calls
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION taskd.llm_costs_daily_add();
CREATE TRIGGER llm_costs_daily_remove AFTER DELETE ON taskd.llm_calls
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION taskd.llm_costs_daily_remove();

-- A call changed in place (a test moving calls back in time, an operator's repair) moves its
-- sums too: its old row taken away, its new one added.
CREATE TRIGGER llm_costs_daily_update_1_remove AFTER UPDATE ON taskd.llm_calls
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION taskd.llm_costs_daily_remove();
CREATE TRIGGER llm_costs_daily_update_2_add AFTER UPDATE ON taskd.llm_calls
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION taskd.llm_costs_daily_add();

-- The calls recorded before this migration (as the add trigger sums them).
INSERT INTO taskd.llm_costs_daily (
    dimension, day, grp, calls, input_tokens, output_tokens, cost_usd,
    cache_write_tokens, cache_read_tokens, priced_calls, unpriced_calls)
SELECT s.dimension, s.day, s.grp, count(*), sum(s.input_tokens), sum(s.output_tokens),
       coalesce(sum(s.cost_usd), 0), sum(s.cache_write_tokens), sum(s.cache_read_tokens),
       count(s.cost_usd),
       count(*) FILTER (
           WHERE s.cost_usd IS NULL
             AND s.input_tokens + s.output_tokens + s.cache_write_tokens
                 + s.cache_read_tokens > 0)
  FROM (SELECT g.dimension, (c.started_at AT TIME ZONE 'UTC')::date AS day, g.grp,
               c.input_tokens, c.output_tokens, c.cache_write_tokens, c.cache_read_tokens,
               c.cost_usd
          FROM taskd.llm_calls c
         CROSS JOIN LATERAL (
             VALUES ('all', ''), ('task', c.task_id),
                    ('key', coalesce(c.concurrency_key, '')), ('model', c.model)
             UNION ALL
             SELECT 'tag', t.tag FROM unnest(c.tags) AS t (tag)
             UNION ALL
             SELECT 'tag', '' WHERE c.tags = '{}'
         ) AS g (dimension, grp)) AS s
 GROUP BY 1, 2, 3;
