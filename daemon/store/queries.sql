-- Every statement taskd runs at run time, by name. The store (store.py) is the only reader.
-- Every state transition is a compare-and-set on (status, worker_id, attempt): a write that
-- matches no row lost a race (the run was rescued or canceled) and is logged, never an error.

-- name: setting_get
SELECT value FROM taskd.settings WHERE key = $1;

-- name: setting_put
INSERT INTO taskd.settings (key, value) VALUES ($1, $2)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: task_sync
INSERT INTO taskd.tasks (id, queue, max_attempts, settings, updated_at)
SELECT * , now() FROM unnest($1::text[], $2::text[], $3::int[], $4::jsonb[])
ON CONFLICT (id) DO UPDATE
   SET queue = excluded.queue, max_attempts = excluded.max_attempts,
       settings = excluded.settings, updated_at = now();

-- name: task_list
SELECT id, queue, max_attempts, settings, updated_at FROM taskd.tasks ORDER BY id;

-- name: worker_register
INSERT INTO taskd.workers (id, host, pid, version, concurrency, queues, tasks)
VALUES ($1, $2, $3, $4, $5, $6, $7);

-- name: worker_heartbeat
-- One statement per daemon per interval, whatever the number of runs it holds ($3: their ids).
WITH beat AS (
    UPDATE taskd.workers SET heartbeat_at = now() WHERE id = $1
)
UPDATE taskd.runs SET lease_expires_at = now() + make_interval(secs => $2)
 WHERE id = ANY($3::uuid[]) AND worker_id = $1 AND status = 'executing';

-- name: worker_stop
UPDATE taskd.workers SET stopped_at = now(), heartbeat_at = now() WHERE id = $1;

-- name: run_insert_many
-- Payloads arrive as JSON text: the caller's own connection (connection=...) has no codecs.
-- One statement: insert the batch, then one NOTIFY per distinct queue (not one per row), sent
-- when the surrounding transaction commits. Delayed runs need no wake-up: polling finds them.
WITH task AS (
    SELECT queue FROM taskd.tasks WHERE id = $1
), inserted AS (
    INSERT INTO taskd.runs (id, task_id, queue, payload, priority, run_at, max_attempts, tags)
    SELECT u.id, $1, coalesce($2, (SELECT queue FROM task), 'default'), u.payload::jsonb, $3,
           coalesce($4, now() + make_interval(secs => $5)), $6, $7
      FROM unnest($8::uuid[], $9::text[]) AS u (id, payload)
    RETURNING queue, run_at
)
SELECT pg_notify('taskd_wakeup', queue)
  FROM (SELECT DISTINCT queue FROM inserted WHERE run_at <= now()) AS due;

-- name: run_claim
-- See taskd.claim_runs in the migrations: a function so that its plan is pinned.
SELECT id, task_id, payload, attempt, max_attempts, queue, tags
  FROM taskd.claim_runs($1::text[], $2::text[], $3::int, $4::uuid, $5::float8);

-- name: run_complete_many
-- Write a batch of attempt outcomes. status is the run's next state: completed, failed, or
-- queued (a retry at now() + retry_delay). The attempt row is written with the same CAS.
WITH outcome AS (
    SELECT * FROM unnest($2::uuid[], $3::int[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::float8[])
        AS o (id, attempt, status, attempt_outcome, output, error, retry_delay)
), updated AS (
    UPDATE taskd.runs r
       SET status = o.status,
           output = o.output::jsonb,
           error = o.error::jsonb,
           run_at = CASE WHEN o.status = 'queued'
                         THEN now() + make_interval(secs => o.retry_delay) ELSE r.run_at END,
           finished_at = CASE WHEN o.status = 'queued' THEN NULL ELSE now() END,
           worker_id = NULL,
           lease_expires_at = NULL
      FROM outcome o
     WHERE r.id = o.id AND r.status = 'executing' AND r.worker_id = $1 AND r.attempt = o.attempt
    RETURNING r.id, r.attempt, r.attempt_started_at, r.queue, r.status
), recorded AS (
    INSERT INTO taskd.attempts (run_id, attempt, worker_id, started_at, finished_at, outcome, error)
    SELECT u.id, u.attempt, $1, u.attempt_started_at, now(), o.attempt_outcome, o.error::jsonb
      FROM updated u JOIN outcome o ON o.id = u.id
), notified AS (
    -- a retry due now must wake a daemon like a new run would
    SELECT pg_notify('taskd_wakeup', q.queue)
      FROM (SELECT DISTINCT queue FROM updated u JOIN outcome o ON o.id = u.id
             WHERE u.status = 'queued' AND o.retry_delay = 0) AS q
)
SELECT u.id FROM updated u LEFT JOIN (SELECT count(*) FROM notified) AS n ON true;

-- name: run_release_many
-- Hand runs back to the queue without spending an attempt (drain, shutdown).
UPDATE taskd.runs r
   SET status = 'queued', attempt = r.attempt - 1, worker_id = NULL, lease_expires_at = NULL,
       attempt_started_at = NULL,
       started_at = CASE WHEN r.attempt = 1 THEN NULL ELSE r.started_at END
  FROM unnest($2::uuid[], $3::int[]) AS h (id, attempt)
 WHERE r.id = h.id AND r.status = 'executing' AND r.worker_id = $1 AND r.attempt = h.attempt
RETURNING r.id;

-- name: run_get
-- max_attempts: the run's override, else its task's (as the last daemon registered it).
SELECT r.id, r.task_id, r.queue, r.status, r.payload, r.output, r.error, r.priority, r.run_at,
       r.attempt, coalesce(r.max_attempts, t.max_attempts) AS max_attempts, r.tags,
       r.created_at, r.started_at, r.finished_at, r.worker_id
  FROM taskd.runs r LEFT JOIN taskd.tasks t ON t.id = r.task_id
 WHERE r.id = $1;

-- name: attempt_list
SELECT attempt, worker_id, started_at, finished_at, outcome, error
  FROM taskd.attempts WHERE run_id = $1 ORDER BY attempt;

-- name: run_list
-- Newest first (ids are UUIDv7); keyset pagination on id.
SELECT r.id, r.task_id, r.queue, r.status, r.payload, r.output, r.error, r.priority, r.run_at,
       r.attempt, coalesce(r.max_attempts, t.max_attempts) AS max_attempts, r.tags,
       r.created_at, r.started_at, r.finished_at, r.worker_id
  FROM taskd.runs r LEFT JOIN taskd.tasks t ON t.id = r.task_id
 WHERE ($1::text[] IS NULL OR r.status = ANY($1))
   AND ($2::text IS NULL OR r.task_id = $2)
   AND ($3::uuid IS NULL OR r.id < $3)
 ORDER BY r.id DESC
 LIMIT $4;
