-- The LLM call limits and budgets of queues (0008_llm_limits.sql): admissions reserved against
-- the sliding window's sums under a per-queue transaction advisory lock, trued up after the
-- call with its real usage.
-- Loaded by store/llm_limits.py (store/queries.py: blocks headed `-- name: NAME`).

-- name: limits
-- A queue's LLM call limits and budget (NULL: none), as the code declares them.
SELECT llm_limits FROM taskd.queues WHERE name = $1;

-- name: lock
-- One admission of the queue at a time, over every daemon (until the transaction ends). The
-- key's first half is taskd's own ('takd'); the second the queue's name.
SELECT pg_advisory_xact_lock(1952541540, hashtext($1));

-- name: limits_now
-- Under the lock: the queue's limits as they are now, and the time the admission counts at
-- (clock_timestamp: after the lock was granted, not when the transaction began).
SELECT clock_timestamp() AS now,
       (SELECT llm_limits FROM taskd.queues WHERE name = $1) AS llm_limits;

-- name: window_sums
-- What the queue's admissions after $2 reserved or used: tokens and requests (Message Batches
-- apart: the token and request limits do not count them).
SELECT coalesce(sum(input), 0)::bigint AS input, coalesce(sum(output), 0)::bigint AS output,
       coalesce(sum(requests), 0)::bigint AS requests
  FROM taskd.llm_admissions
 WHERE queue = $1 AND admitted_at > $2 AND NOT batch;

-- name: window_rows
-- The queue's admissions after $2, oldest first: when each leaves the window, what it frees.
SELECT admitted_at, input, output, requests
  FROM taskd.llm_admissions
 WHERE queue = $1 AND admitted_at > $2 AND NOT batch
 ORDER BY admitted_at, id;

-- name: key_spend
-- What the concurrency key $2 of the queue spent (or reserved) after $3, in dollars.
SELECT coalesce(sum(cost), 0) AS cost
  FROM taskd.llm_admissions
 WHERE queue = $1 AND concurrency_key = $2 AND admitted_at > $3;

-- name: key_rows
-- The key's admissions after $3 that cost something, oldest first.
SELECT admitted_at, cost
  FROM taskd.llm_admissions
 WHERE queue = $1 AND concurrency_key = $2 AND admitted_at > $3 AND cost > 0
 ORDER BY admitted_at, id;

-- name: admitted
-- Under the lock: the admission the client's id $1 names, if it was made already (the same
-- admission asked again after its answer was lost with the connection).
SELECT id, admitted_at FROM taskd.llm_admissions WHERE request = $1;

-- name: admit
-- The call's reservation: its estimate, at the admission's time ($8: the client's id of the
-- admission, or NULL).
INSERT INTO taskd.llm_admissions (queue, concurrency_key, run_id, admitted_at, input, output,
                                  requests, cost, request)
VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8)
RETURNING id;

-- name: admit_batch
-- A Message Batch's reservation: the sum of its requests' estimates ($7 requests), counted by
-- the budgets only ($9: the client's id of the admission, or NULL).
INSERT INTO taskd.llm_admissions (queue, concurrency_key, run_id, admitted_at, input, output,
                                  requests, cost, batch, request)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, true, $9)
RETURNING id;

-- name: true_up
-- After the call: what it really used (a call that failed before any usage: nothing but its
-- request).
UPDATE taskd.llm_admissions
   SET input = $2, output = $3, cost = $4, settled = true
 WHERE id = $1;

-- name: run_spend
-- Dollars the run's recorded LLM calls cost, over all its attempts and executions, plus what
-- its open Message Batches reserved (a batch's calls are recorded when it ends, in the same
-- transaction that closes it: a batch counts once, at its estimate or at its cost).
SELECT (SELECT coalesce(sum(cost_usd), 0) FROM taskd.llm_calls WHERE run_id = $1)
       + (SELECT coalesce(sum(reserved_usd), 0) FROM taskd.llm_batches
           WHERE run_id = $1 AND status <> 'ended') AS cost;

-- name: prune
-- Admissions older than the longest window (a day): a batch of at most $1.
DELETE FROM taskd.llm_admissions
 WHERE id IN (SELECT id FROM taskd.llm_admissions
               WHERE admitted_at < now() - interval '1 day'
               ORDER BY admitted_at LIMIT $1
                 FOR UPDATE SKIP LOCKED);

-- name: queue_budgets
-- Every queue budget (llm_limits.budget), with its window's start now and, per concurrency
-- key that spent (or reserved) in the window, its dollars: most first, at most $1 keys per
-- queue (NULL key and spent: nothing spent). Along llm_admissions_key_idx (admissions are
-- kept a day, the longest window).
WITH budgets AS (
    SELECT name, (llm_limits->'budget'->>'usd')::numeric AS limit_usd,
           (llm_limits->'budget'->>'period')::float8 AS period,
           coalesce(llm_limits->'budget'->>'on_exceed', 'fail') AS on_exceed,
           now() - make_interval(secs => (llm_limits->'budget'->>'period')::float8)
               AS window_start
      FROM taskd.queues
     WHERE jsonb_typeof(llm_limits->'budget') = 'object'
)
SELECT b.name, b.limit_usd, b.period, b.on_exceed, b.window_start, s.concurrency_key, s.spent
  FROM budgets b
  LEFT JOIN LATERAL (
      SELECT a.concurrency_key, sum(a.cost) AS spent
        FROM taskd.llm_admissions a
       WHERE a.queue = b.name AND a.admitted_at > b.window_start
       GROUP BY a.concurrency_key
      HAVING sum(a.cost) > 0
       ORDER BY spent DESC, a.concurrency_key
       LIMIT $1
  ) s ON true
 ORDER BY b.name, s.spent DESC NULLS LAST, s.concurrency_key;

-- name: task_budgets
-- Every task registered with a run budget (tasks.settings budget_usd), with the most any of its
-- unfinished runs has spent (run_spend's sum: its recorded calls plus its open Message
-- Batches). The unfinished runs that can have spent come from the small partial indexes, not
-- from the tasks' history: executing (runs_lease_idx), waiting (runs_waiting_idx), queued
-- again after an attempt (runs_claim_idx); a queued run that never started spent nothing.
WITH budgeted AS (
    SELECT id, (settings->>'budget_usd')::numeric AS limit_usd
      FROM taskd.tasks
     WHERE jsonb_typeof(settings->'budget_usd') = 'number'
), unfinished AS MATERIALIZED (
    SELECT id, task_id FROM taskd.runs WHERE lease_expires_at IS NOT NULL
    UNION
    SELECT id, task_id FROM taskd.runs WHERE status = 'waiting'
    UNION
    SELECT id, task_id FROM taskd.runs WHERE status = 'queued' AND attempt > 0
), spent AS MATERIALIZED (
    SELECT u.task_id,
           (SELECT coalesce(sum(cost_usd), 0) FROM taskd.llm_calls WHERE run_id = u.id)
           + (SELECT coalesce(sum(reserved_usd), 0) FROM taskd.llm_batches
               WHERE run_id = u.id AND status <> 'ended') AS spent
      FROM unfinished u
     WHERE u.task_id IN (SELECT id FROM budgeted)
)
SELECT b.id, b.limit_usd, coalesce(max(s.spent), 0) AS spent
  FROM budgeted b LEFT JOIN spent s ON s.task_id = b.id
 GROUP BY b.id, b.limit_usd
 ORDER BY b.id;
