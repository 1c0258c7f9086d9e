-- Waits: waiting runs back to the queue (a timer due, a token completed, the last child
-- finished), and the children trigger_and_wait creates.
-- Loaded by store/waits.py (store/queries.py: blocks headed `-- name: NAME`).

-- name: wake_due
-- Waiting runs whose wake-up time has come go back to the queue (oldest first, a batch, SKIP
-- LOCKED), and the claimers of the daemons serving their queues are nudged.
WITH due AS (
    SELECT id FROM taskd.runs
     WHERE status = 'waiting' AND run_at <= now()
     ORDER BY run_at
     LIMIT $1
       FOR UPDATE SKIP LOCKED
), woken AS (
    UPDATE taskd.runs r SET status = 'queued'
      FROM due WHERE r.id = due.id AND r.status = 'waiting'
    RETURNING r.id, r.task_id, r.queue
), notified AS (
    SELECT pg_notify('taskd_wakeup', q.queue) FROM (SELECT DISTINCT queue FROM woken) AS q
)
SELECT woken.id, woken.task_id FROM woken CROSS JOIN (SELECT count(*) FROM notified) AS n;

-- name: wake_completed_tokens
-- Runs whose token was completed while they were still executing, and that wait now on that
-- token (awaited: it reached wait.for_token on it). A run waiting on something else (a timer,
-- children) sleeps on: it reads the data when it reaches for_token.
WITH due AS (
    SELECT r.id FROM taskd.wait_tokens t JOIN taskd.runs r ON r.id = t.run_id
     WHERE t.unseen AND t.awaited AND r.status = 'waiting'
     LIMIT $1
       FOR UPDATE OF r SKIP LOCKED
), finished AS (
    -- unseen tokens whose run finished without reading them: nothing ever will
    SELECT t.id FROM taskd.wait_tokens t
     WHERE t.unseen
       AND NOT EXISTS (SELECT FROM taskd.runs r
                        WHERE r.id = t.run_id AND r.status IN ('queued', 'executing', 'waiting'))
     LIMIT $1
       FOR UPDATE OF t SKIP LOCKED
), cleared AS (
    UPDATE taskd.wait_tokens t SET unseen = false FROM finished WHERE t.id = finished.id
), woken AS (
    UPDATE taskd.runs r SET status = 'queued', run_at = now()
      FROM due WHERE r.id = due.id AND r.status = 'waiting'
    RETURNING r.id, r.task_id, r.queue
), notified AS (
    SELECT pg_notify('taskd_wakeup', q.queue) FROM (SELECT DISTINCT queue FROM woken) AS q
)
SELECT woken.id, woken.task_id FROM woken CROSS JOIN (SELECT count(*) FROM notified) AS n;

-- name: create_children
-- trigger_and_wait: the children and the step that records their ids, in one statement, under
-- the parent's compare-and-set ($1 parent, $2 worker, $3 attempt, $4 step name): a parent
-- that executes again finds the step and creates nothing. $7, $8, $13: the runs to create
-- (id, payload, idempotency key); $12: every id the step records, including runs that
-- already held their idempotency key; $16 the children's version. Returns whether the step
-- was written.
WITH owner AS (
    -- FOR SHARE: waits for a concurrent change of the parent and checks it again (see
    -- steps.record)
    SELECT 1 FROM taskd.runs r
     WHERE r.id = $1 AND r.status = 'executing' AND r.worker_id = $2 AND r.attempt = $3
       FOR SHARE
), step AS (
    INSERT INTO taskd.steps (run_id, name, status, result, attempts, run_attempt, started_at,
                             finished_at)
    SELECT $1, $4, 'completed', to_jsonb($12::uuid[]), 1, $3, now(), now() FROM owner
    ON CONFLICT (run_id, name) DO NOTHING
    RETURNING 1
), task AS (
    SELECT queue FROM taskd.tasks WHERE id = $5
), inserted AS (
    INSERT INTO taskd.runs (id, task_id, queue, payload, parent_id, tags, max_attempts,
                            concurrency_key, idempotency_key, retry, max_duration, version)
    SELECT u.id, $5, coalesce($6, (SELECT queue FROM task), 'default'), u.payload::jsonb, $1,
           $9, $10, $11, u.key, $14::text::jsonb, $15,
           -- pinned at birth: the version of the child's task deployed beside the parent's
           -- code ($16, the creating daemon's), else the parent's own
           coalesce($16::text, (SELECT p.version FROM taskd.runs p WHERE p.id = $1))
      FROM unnest($7::uuid[], $8::text[], $13::text[]) AS u (id, payload, key)
     WHERE EXISTS (SELECT 1 FROM step)
    RETURNING queue
), notified AS (
    SELECT pg_notify('taskd_wakeup', q.queue) FROM (SELECT DISTINCT queue FROM inserted) AS q
)
SELECT (SELECT count(*) FROM step) AS recorded, (SELECT count(*) FROM notified) AS queues;

-- name: children_recorded
-- The ids a children step records, when this attempt wrote it: a retry of waits.create_children
-- whose first try committed unseen (the connection lost) finds its own ids here.
SELECT result FROM taskd.steps WHERE run_id = $1 AND name = $2 AND run_attempt = $3;

-- name: children_results
SELECT id, task_id, status, output, error FROM taskd.runs WHERE id = ANY($1::uuid[]);

-- name: wake_parents
-- Waiting parents of these runs whose children have all finished go back to the queue. Run
-- after the children's outcomes committed, as a statement of its own: of two daemons that
-- finish a parent's last two children at once, the later one sees both finished.
-- A parent whose row another transaction holds is skipped, not waited for: the one that holds
-- it (the other daemon waking it) wakes it, or the parent's own recheck does
-- (CHILDREN_RECHECK).
WITH ready AS (
    SELECT p.id FROM taskd.runs p
     WHERE p.id IN (SELECT DISTINCT c.parent_id FROM taskd.runs c
                     WHERE c.id = ANY($1::uuid[]) AND c.parent_id IS NOT NULL)
       AND p.status = 'waiting'
       -- The parent's unfinished children only (runs_unfinished_children_idx): a fan-out of
       -- n children finishing in batches must not walk the finished ones at every batch.
       -- OFFSET 0 keeps this a probe per parent that stops at the first child found: as an
       -- anti join the planner may choose to scan the whole table instead.
       AND NOT EXISTS (SELECT 1 FROM taskd.runs s
                        WHERE s.parent_id = p.id
                          AND s.status NOT IN ('completed', 'failed', 'canceled', 'expired')
                       OFFSET 0)
     ORDER BY p.id
       FOR NO KEY UPDATE OF p SKIP LOCKED
), woken AS (
    UPDATE taskd.runs p SET status = 'queued', run_at = now()
      FROM ready WHERE p.id = ready.id AND p.status = 'waiting'
    RETURNING p.id, p.task_id, p.queue
), notified AS (
    SELECT pg_notify('taskd_wakeup', q.queue) FROM (SELECT DISTINCT queue FROM woken) AS q
)
SELECT woken.id, woken.task_id FROM woken CROSS JOIN (SELECT count(*) FROM notified) AS n;

-- name: wake_missed_parents
-- (burst mode) Waiting parents of these tasks (in these queues; NULL: every queue) whose
-- children have all finished, the last of them after the parent's latest attempt began: the
-- parent has not seen them all finished, and wake_parents missed it (its last child finished
-- while it was still suspending). Back to the queue now, instead of at its recheck. A parent
-- waiting on something else after its children (a timer, a token) is woken at most once: its
-- next attempt begins after its children finished.
WITH ready AS (
    SELECT p.id FROM taskd.runs p
     WHERE p.status = 'waiting' AND p.task_id = ANY($1::text[])
       AND ($2::text[] IS NULL OR p.queue = ANY($2::text[]))
       AND NOT EXISTS (SELECT 1 FROM taskd.runs s
                        WHERE s.parent_id = p.id
                          AND s.status NOT IN ('completed', 'failed', 'canceled', 'expired')
                       OFFSET 0)
       AND EXISTS (SELECT 1 FROM taskd.runs c
                    WHERE c.parent_id = p.id AND c.finished_at >= p.attempt_started_at)
     ORDER BY p.id
       FOR NO KEY UPDATE OF p SKIP LOCKED
), woken AS (
    UPDATE taskd.runs p SET status = 'queued', run_at = now()
      FROM ready WHERE p.id = ready.id AND p.status = 'waiting'
    RETURNING p.id, p.task_id, p.queue
), notified AS (
    SELECT pg_notify('taskd_wakeup', q.queue) FROM (SELECT DISTINCT queue FROM woken) AS q
)
SELECT woken.id, woken.task_id FROM woken CROSS JOIN (SELECT count(*) FROM notified) AS n;
