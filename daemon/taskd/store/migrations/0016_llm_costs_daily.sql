-- What LLM calls cost per UTC day, kept beside taskd.llm_calls so that the console's daily
-- costs (GET /api/costs/daily, up to 400 days) read one row per day and group instead of every
-- call: for each of the four dimensions a report groups by (task, key: the concurrency key,
-- model, tag), one row per day and group ('' for a call without a key or without tags; a call
-- with several tags counts in each), and one row per day of every call (dimension 'all', group
-- ''). Kept equal to the sums of taskd.llm_calls by statement
-- triggers: a statement of inserts adds its calls in one upsert, the pruner's deletes take
-- theirs away.
CREATE TABLE taskd.llm_costs_daily (
    dimension text NOT NULL CHECK (dimension IN ('all', 'task', 'key', 'model', 'tag')),
    day date NOT NULL,
    grp text NOT NULL,
    calls bigint NOT NULL,
    input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL,
    cost_usd numeric NOT NULL,
    PRIMARY KEY (dimension, day, grp)
);
COMMENT ON TABLE taskd.llm_costs_daily IS
    'taskd.llm_calls summed per dimension (task, key, model, tag; all: every call), UTC day of '
    'started_at and group ('''' for no key or no tag); kept by triggers on taskd.llm_calls.';

CREATE FUNCTION taskd.llm_costs_daily_add() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    -- in key order: two statements adding to the same rows lock them in the same order
    INSERT INTO taskd.llm_costs_daily AS d
    SELECT s.dimension, s.day, s.grp, count(*), sum(s.input_tokens), sum(s.output_tokens),
           coalesce(sum(s.cost_usd), 0)
      FROM (SELECT g.dimension, (c.started_at AT TIME ZONE 'UTC')::date AS day, g.grp,
                   c.input_tokens, c.output_tokens, c.cost_usd
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
           cost_usd = d.cost_usd + excluded.cost_usd;
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
           cost_usd = d.cost_usd - r.cost_usd
      FROM (SELECT s.dimension, s.day, s.grp, count(*) AS calls,
                   sum(s.input_tokens) AS input_tokens, sum(s.output_tokens) AS output_tokens,
                   coalesce(sum(s.cost_usd), 0) AS cost_usd
              FROM (SELECT g.dimension, (c.started_at AT TIME ZONE 'UTC')::date AS day, g.grp,
                           c.input_tokens, c.output_tokens, c.cost_usd
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

-- The calls recorded before this migration (as the add trigger sums them).
INSERT INTO taskd.llm_costs_daily
SELECT s.dimension, s.day, s.grp, count(*), sum(s.input_tokens), sum(s.output_tokens),
       coalesce(sum(s.cost_usd), 0)
  FROM (SELECT g.dimension, (c.started_at AT TIME ZONE 'UTC')::date AS day, g.grp,
               c.input_tokens, c.output_tokens, c.cost_usd
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
