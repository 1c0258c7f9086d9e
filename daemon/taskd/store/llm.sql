-- LLM calls made through ctx.llm (0007_llm_calls.sql): their records, and the backoffs that
-- keep every daemon from calling an API that asked to be left alone.
-- Loaded by store/llm.py (store/queries.py: blocks headed `-- name: NAME`).

-- name: insert_calls
-- One batch of call records (the LLM call writer's).
INSERT INTO taskd.llm_calls (
    run_id, task_id, attempt, step, queue, concurrency_key, tags, model, kind, outcome,
    input_tokens, output_tokens, cache_write_tokens, cache_read_tokens, cost_usd, latency_ms,
    stop_reason, request_id, error, started_at)
SELECT c.run_id, c.task_id, c.attempt, c.step, c.queue, c.concurrency_key,
       coalesce(
           (SELECT array_agg(t) FROM jsonb_array_elements_text(c.tags::jsonb) AS t), '{}'),
       c.model, c.kind, c.outcome, c.input_tokens, c.output_tokens, c.cache_write_tokens,
       c.cache_read_tokens, c.cost_usd, c.latency_ms, c.stop_reason, c.request_id, c.error,
       c.started_at
  FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[],
              $7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[], $12::bigint[],
              $13::bigint[], $14::bigint[], $15::numeric[], $16::int[], $17::text[],
              $18::text[], $19::text[], $20::timestamptz[])
       AS c (run_id, task_id, attempt, step, queue, concurrency_key, tags, model, kind,
             outcome, input_tokens, output_tokens, cache_write_tokens, cache_read_tokens,
             cost_usd, latency_ms, stop_reason, request_id, error, started_at);

-- name: gate
-- Before a call: the model's backoff (no call before `until`), the run's time waiting for this
-- key in this attempt ($4) and its queue's LLM limits (one round trip for all three: it is on
-- every call's path).
SELECT now() AS now, b.until, b.overloads, b.reason, d.since, d.deferrals,
       (SELECT q.llm_limits FROM taskd.queues q WHERE q.name = $3) AS queue_limits
  FROM (SELECT 1) AS one
  LEFT JOIN taskd.llm_backoffs b ON b.model = $1
  LEFT JOIN taskd.llm_deferrals d ON d.run_id = $2 AND d.key = $1 AND d.attempt = $4;

-- name: defer_run
-- The run goes back to the queue for the API, waiting for key $3 in attempt $4: since when it
-- has been waiting, how often. A deferral of an earlier attempt is over: it starts afresh. The
-- same deferral asked again ($5, the client's id: its first answer lost) counts once.
INSERT INTO taskd.llm_deferrals AS d (run_id, reason, key, attempt, request)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (run_id, key) DO UPDATE
   SET since = CASE WHEN d.attempt = excluded.attempt THEN d.since ELSE now() END,
       deferrals = CASE WHEN d.attempt <> excluded.attempt THEN 1
                        WHEN d.request = excluded.request THEN d.deferrals
                        ELSE d.deferrals + 1 END,
       attempt = excluded.attempt, reason = excluded.reason, request = excluded.request
RETURNING since, deferrals, now() AS now;

-- name: count_overload
-- An overload answer for the model: the streak (the exponent of its backoff) grows by one only
-- for an answer that arrives after the backoff window it opened has ended (or the first of a
-- streak): the answers of the calls in flight when the API overloaded, arriving together, are
-- one overload, not a streak. A counted answer holds the model at least the shortest wait of
-- its step ($3 seconds doubled per step, at most $4), so that the answers arriving with it
-- find the window open; the caller then backs the model off to its jittered wait.
INSERT INTO taskd.llm_backoffs AS b (model, until, overloads, reason)
VALUES ($1, now() + make_interval(secs => $3), 1, $2)
ON CONFLICT (model) DO UPDATE
   SET overloads = CASE WHEN b.until <= now() OR b.overloads = 0
                        THEN b.overloads + 1 ELSE b.overloads END,
       until = CASE WHEN b.until <= now() OR b.overloads = 0
                    THEN greatest(b.until, now() + make_interval(
                             secs => least($4, $3 * 2 ^ least(b.overloads, 30))))
                    ELSE b.until END,
       reason = excluded.reason, updated_at = now()
RETURNING overloads;

-- name: back_off
-- No daemon calls the model before $2 (a later backoff already held stays).
INSERT INTO taskd.llm_backoffs AS b (model, until, reason) VALUES ($1, $2, $3)
ON CONFLICT (model) DO UPDATE
   SET until = greatest(b.until, excluded.until), reason = excluded.reason, updated_at = now()
RETURNING until;

-- name: recovered
-- A call of key $1 by run $2 succeeded: the key's overload streak ends, and the run's wait for
-- that key (a wait for another key goes on).
WITH run AS (DELETE FROM taskd.llm_deferrals WHERE run_id = $2 AND key = $1)
UPDATE taskd.llm_backoffs SET overloads = 0, updated_at = now()
 WHERE model = $1 AND overloads > 0;

-- name: backoffs
-- The models no daemon calls before `until` (taskd queues list, /api/queues).
SELECT model, until, overloads, reason, updated_at
  FROM taskd.llm_backoffs
 WHERE until > now()
 ORDER BY model;

-- name: costs
-- What calls cost, summed in the database (exact: bigint tokens, numeric dollars). The store
-- (LLMStore.costs) puts the group's expression in place of GROUP_NAME (c.task_id,
-- c.concurrency_key, c.model, c.run_id::text, the tag t.tag; NULL for the total alone) and
-- TAG_JOIN (by tag: one row per tag of a call, and one with a NULL tag for a call without
-- any), then appends one condition per filter given ("AND ..."), the grouping and the order.
-- A call's tokens without a price (cost_usd NULL) count in unpriced_calls; a failed call
-- without tokens (a 429) has no cost and needs no price.
SELECT GROUP_NAME AS name,
       count(*) AS calls,
       coalesce(sum(c.input_tokens), 0)::bigint AS input_tokens,
       coalesce(sum(c.output_tokens), 0)::bigint AS output_tokens,
       coalesce(sum(c.cache_write_tokens), 0)::bigint AS cache_write_tokens,
       coalesce(sum(c.cache_read_tokens), 0)::bigint AS cache_read_tokens,
       coalesce(sum(c.cost_usd), 0) AS cost_usd,
       count(*) FILTER (
           WHERE c.cost_usd IS NULL
             AND c.input_tokens + c.output_tokens + c.cache_write_tokens
                 + c.cache_read_tokens > 0) AS unpriced_calls
  FROM taskd.llm_calls c
  TAG_JOIN
 WHERE true

-- name: costs_of_days
-- What costs answers for a range of whole UTC days and partial days at its ends (LLMStore.costs,
-- by task, key, model, tag or none, with no filter or one on task, key or model): the sums of
-- the daily rows (taskd.llm_costs_daily: the store puts the conditions on dimension, day range
-- and group in place of the daily condition) and of the calls of the partial days (the
-- costs_of_calls statements, one per end, in place of the parts), added per group. The daily
-- name: the daily row's group as the scan names it (by key and by tag, '' is the calls
-- without any: NULL). Dollars: 0 for a group none of whose calls has a price, like the scan's
-- coalesce(sum(cost_usd), 0). The report's name: parts.name (the store appends the grouping),
-- NULL for the total.
SELECT REPORT_NAME AS name,
       coalesce(sum(calls), 0)::bigint AS calls,
       coalesce(sum(input_tokens), 0)::bigint AS input_tokens,
       coalesce(sum(output_tokens), 0)::bigint AS output_tokens,
       coalesce(sum(cache_write_tokens), 0)::bigint AS cache_write_tokens,
       coalesce(sum(cache_read_tokens), 0)::bigint AS cache_read_tokens,
       CASE WHEN sum(priced_calls) > 0 THEN sum(cost_usd) ELSE 0 END AS cost_usd,
       coalesce(sum(unpriced_calls), 0)::bigint AS unpriced_calls
  FROM (SELECT DAILY_NAME AS name, d.calls, d.input_tokens, d.output_tokens,
               d.cache_write_tokens, d.cache_read_tokens, d.cost_usd, d.priced_calls,
               d.unpriced_calls
          FROM taskd.llm_costs_daily d
         WHERE DAILY_WHERE
        PARTS) AS parts

-- name: costs_of_calls
-- The sums of costs_of_days's partial days, per group (the group's expression and the tag join
-- as in costs; the store appends the conditions and the grouping).
SELECT GROUP_NAME AS name,
       count(*) AS calls,
       coalesce(sum(c.input_tokens), 0)::bigint AS input_tokens,
       coalesce(sum(c.output_tokens), 0)::bigint AS output_tokens,
       coalesce(sum(c.cache_write_tokens), 0)::bigint AS cache_write_tokens,
       coalesce(sum(c.cache_read_tokens), 0)::bigint AS cache_read_tokens,
       coalesce(sum(c.cost_usd), 0) AS cost_usd,
       count(c.cost_usd) AS priced_calls,
       count(*) FILTER (
           WHERE c.cost_usd IS NULL
             AND c.input_tokens + c.output_tokens + c.cache_write_tokens
                 + c.cache_read_tokens > 0) AS unpriced_calls
  FROM taskd.llm_calls c
  TAG_JOIN
 WHERE true

-- name: calls_keyed_empty
-- Whether a call of [$1, $2) (NULL: unbounded) has the concurrency key '' (the daily rows
-- count it with the calls without a key; llm_calls_key_idx).
SELECT EXISTS (SELECT 1 FROM taskd.llm_calls
                WHERE concurrency_key = ''
                  AND ($1::timestamptz IS NULL OR started_at >= $1)
                  AND ($2::timestamptz IS NULL OR started_at < $2));

-- name: calls_tagged_empty
-- Whether a call of [$1, $2) (NULL: unbounded) has the tag '' (the daily rows count it with
-- the calls without tags; llm_calls_empty_tag_idx).
SELECT EXISTS (SELECT 1 FROM taskd.llm_calls
                WHERE '' = ANY (tags)
                  AND ($1::timestamptz IS NULL OR started_at >= $1)
                  AND ($2::timestamptz IS NULL OR started_at < $2));

-- name: run_calls
-- A run's calls, oldest first (llm_calls_run_idx), at most $2.
SELECT id, run_id, task_id, attempt, step, queue, concurrency_key, tags, model, kind, outcome,
       input_tokens, output_tokens, cache_write_tokens, cache_read_tokens, cost_usd,
       latency_ms, stop_reason, request_id, error, started_at
  FROM taskd.llm_calls
 WHERE run_id = $1
 ORDER BY id
 LIMIT $2;

-- name: daily_costs
-- What calls cost per UTC day and group of dimension $1 (task, key, model: each call in one
-- group) over the last $2 days (today included), from taskd.llm_costs_daily (kept by triggers
-- on llm_calls: one row per dimension, day and group, not every call; its primary key leads
-- with dimension and day). The $3 groups that cost the most over the range are listed per day,
-- most first (their rows as they are); the others are summed per day with group NULL, last:
-- the day's total (dimension 'all') less the listed rows, so that only the top groups' rows
-- are read twice. `others`: how many groups were summed.
WITH ranked AS MATERIALIZED (
    SELECT grp, row_number() OVER (ORDER BY sum(cost_usd) DESC, sum(calls) DESC, grp) AS rank
      FROM taskd.llm_costs_daily
     WHERE dimension = $1 AND day > (now() AT TIME ZONE 'UTC')::date - $2::int
     GROUP BY grp
), listed AS MATERIALIZED (
    SELECT d.day, d.grp, d.calls, d.input_tokens, d.output_tokens, d.cost_usd, k.rank
      FROM taskd.llm_costs_daily d JOIN ranked k ON k.grp = d.grp AND k.rank <= $3
     WHERE d.dimension = $1 AND d.day > (now() AT TIME ZONE 'UTC')::date - $2::int
), listed_per_day AS (
    SELECT day, sum(calls) AS calls, sum(input_tokens) AS input_tokens,
           sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost_usd
      FROM listed GROUP BY day
)
SELECT day, grp, calls, input_tokens, output_tokens, cost_usd,
       (SELECT count(*) FROM ranked WHERE rank > $3) AS others
  FROM (SELECT day, grp, calls, input_tokens, output_tokens, cost_usd, rank FROM listed
        UNION ALL
        SELECT a.day, NULL, (a.calls - coalesce(l.calls, 0))::bigint,
               (a.input_tokens - coalesce(l.input_tokens, 0))::bigint,
               (a.output_tokens - coalesce(l.output_tokens, 0))::bigint,
               a.cost_usd - coalesce(l.cost_usd, 0), NULL
          FROM taskd.llm_costs_daily a LEFT JOIN listed_per_day l ON l.day = a.day
         WHERE a.dimension = 'all' AND a.grp = ''
           AND a.day > (now() AT TIME ZONE 'UTC')::date - $2::int
           AND a.calls > coalesce(l.calls, 0)) AS rows
 ORDER BY day, rank NULLS LAST;

-- name: daily_costs_tags
-- daily_costs by tag ($1 'tag'): a call with several tags counts in the row of each, so the others are
-- the sum of the other tags' rows (a handful: tags are few).
WITH range AS MATERIALIZED (
    SELECT day, grp, calls, input_tokens, output_tokens, cost_usd
      FROM taskd.llm_costs_daily
     WHERE dimension = $1 AND day > (now() AT TIME ZONE 'UTC')::date - $2::int
), ranked AS MATERIALIZED (
    SELECT grp, row_number() OVER (ORDER BY sum(cost_usd) DESC, sum(calls) DESC, grp) AS rank
      FROM range GROUP BY grp
)
SELECT day, grp, calls, input_tokens, output_tokens, cost_usd,
       (SELECT count(*) FROM ranked WHERE rank > $3) AS others
  FROM (SELECT r.day, r.grp, r.calls, r.input_tokens, r.output_tokens, r.cost_usd, k.rank
          FROM range r JOIN ranked k ON k.grp = r.grp AND k.rank <= $3
        UNION ALL
        SELECT r.day, NULL, sum(r.calls)::bigint, sum(r.input_tokens)::bigint,
               sum(r.output_tokens)::bigint, sum(r.cost_usd), NULL
          FROM range r JOIN ranked k ON k.grp = r.grp AND k.rank > $3
         GROUP BY r.day) AS rows
 ORDER BY day, rank NULLS LAST;

-- name: daily_total
-- Every call of the last $1 days (today included), each once.
SELECT coalesce(sum(cost_usd), 0) AS cost_usd
  FROM taskd.llm_costs_daily
 WHERE dimension = 'all' AND day > (now() AT TIME ZONE 'UTC')::date - $1::int;
