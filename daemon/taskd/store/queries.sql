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
INSERT INTO taskd.workers (id, host, pid, version, concurrency, queues, tasks, lock_key, process)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb);

-- name: worker_lock
-- On the worker's own session, for its whole life (released when the session ends). Polled,
-- never waited for: a blocking pg_advisory_lock would wait, unseen by the session's probe,
-- behind whoever holds the key.
SELECT pg_try_advisory_lock($1);

-- name: worker_lock_free_orphans
-- The key is random per process start, so a taskd session of our own role that holds it is
-- this daemon's own earlier lock session, orphaned (its client vanished in a partition and
-- the server has not noticed yet): terminated, so the lock can be taken again. Any other
-- holder is left alone (the lock is retaken when it lets go). Returns the pids signalled.
-- (MATERIALIZED: the terminate runs only on rows that passed every condition.)
WITH orphan AS MATERIALIZED (
    SELECT l.pid
      FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND l.classid::bigint = (($1::bigint >> 32) & 4294967295)
       AND l.objid::bigint = ($1::bigint & 4294967295)
       AND l.pid <> pg_backend_pid()
       AND a.application_name = 'taskd' AND a.usename = current_user
)
SELECT pid FROM orphan WHERE pg_terminate_backend(pid);

-- name: session_keepalives
-- On each dedicated session (LISTEN, worker lock, event relay): the server notices a client
-- gone in a partition within about 20 s, instead of the OS default of two hours, and
-- releases what the session held (the worker lock above all).
SELECT set_config('tcp_keepalives_idle', '5', false),
       set_config('tcp_keepalives_interval', '5', false),
       set_config('tcp_keepalives_count', '3', false);

-- name: worker_list_unlocked
-- Workers not known to be stopped whose advisory lock no session holds: their process (or
-- its connection) is gone. A bigint advisory key shows in pg_locks as classid (high 32 bits)
-- and objid (low 32 bits) with objsubid 1. process: its process identity, when recorded.
SELECT w.id, w.host, w.pid, w.process
  FROM taskd.workers w
 WHERE w.stopped_at IS NULL AND w.id <> $1
   AND NOT EXISTS (
       SELECT 1 FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid::bigint = ((w.lock_key >> 32) & 4294967295)
          AND l.objid::bigint = (w.lock_key & 4294967295));

-- name: worker_mark_gone
UPDATE taskd.workers SET stopped_at = now() WHERE id = ANY($1::uuid[]) AND stopped_at IS NULL;

-- name: worker_list
SELECT w.id, w.host, w.pid, w.version, w.concurrency, w.queues, w.tasks, w.started_at,
       w.heartbeat_at, w.stopped_at, w.last_report,
       (SELECT count(*) FROM taskd.runs r
         WHERE r.lease_expires_at IS NOT NULL AND r.worker_id = w.id) AS executing
  FROM taskd.workers w
 WHERE w.stopped_at IS NULL
 ORDER BY w.started_at;

-- name: worker_heartbeat
-- One statement per daemon per interval, whatever the number of runs it holds ($3, $4: their
-- ids and attempts). Returns whether the worker was declared gone meanwhile (stopped_at set
-- by another daemon's rescuer): it must then stop, its runs belong to others; no row when
-- the worker row is gone altogether (pruned, deleted), which means the same.
-- A run whose row another transaction holds (an application's open taskd.cancel) is skipped,
-- never waited for: one held row must not stop the renewal of the others. Rows are locked in
-- id order, like every other writer of runs.
WITH held AS (
    SELECT r.id
      FROM taskd.runs r JOIN unnest($3::uuid[], $4::int[]) AS h (id, attempt)
        ON r.id = h.id AND r.attempt = h.attempt
     WHERE r.worker_id = $1 AND r.status = 'executing'
     ORDER BY r.id
       FOR NO KEY UPDATE OF r SKIP LOCKED
), renewed AS (
    UPDATE taskd.runs r SET lease_expires_at = now() + make_interval(secs => $2)
      FROM held WHERE r.id = held.id
)
UPDATE taskd.workers SET heartbeat_at = now() WHERE id = $1
RETURNING stopped_at IS NOT NULL AS gone;

-- name: worker_stop
UPDATE taskd.workers SET stopped_at = now(), heartbeat_at = now() WHERE id = $1;

-- name: run_insert_many
-- Payloads arrive as JSON text: the caller's own connection (connection=...) has no codecs.
-- One statement: insert the batch, then one NOTIFY per distinct queue (not one per row), sent
-- when the surrounding transaction commits. Delayed runs need no wake-up: polling finds them.
WITH task AS (
    SELECT queue FROM taskd.tasks WHERE id = $1
), inserted AS (
    INSERT INTO taskd.runs (id, task_id, queue, payload, priority, run_at, max_attempts, tags,
                            expires_at, concurrency_key, idempotency_key)
    SELECT u.id, $1, coalesce($2, (SELECT queue FROM task), 'default'), u.payload::jsonb, $3,
           coalesce($4, now() + make_interval(secs => $5)), $6, $7,
           now() + make_interval(secs => $10), $11, u.key
      FROM unnest($8::uuid[], $9::text[], $12::text[]) AS u (id, payload, key)
    RETURNING queue, run_at
)
SELECT pg_notify('taskd_wakeup', queue)
  FROM (SELECT DISTINCT queue FROM inserted WHERE run_at <= now()) AS due;

-- name: idempotency_claim_many
-- The keys of a keyed batch (distinct, sorted: two batches sharing keys take them in one
-- order, so they wait for each other instead of deadlocking), each for the run id given
-- with it. Returns the keys this transaction now holds; the others are held by earlier runs.
INSERT INTO taskd.idempotency_keys AS k (task_id, idempotency_key, run_id, expires_at)
SELECT $1, u.key, u.id, now() + make_interval(secs => $4)
  FROM unnest($2::text[], $3::uuid[]) AS u (key, id)
 ORDER BY u.key
ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO UPDATE
   SET run_id = excluded.run_id, expires_at = excluded.expires_at, created_at = now()
 WHERE k.expires_at <= now()
RETURNING k.idempotency_key;

-- name: idempotency_lookup
-- (a statement of its own, after idempotency_claim_many: its snapshot sees the runs that
-- held a key it waited for)
SELECT idempotency_key, run_id FROM taskd.idempotency_keys
 WHERE task_id = $1 AND idempotency_key = ANY($2::text[]);

-- name: run_trigger
-- One run through taskd.trigger (the idempotency-key path): its id, or the id of the run that
-- already holds the key.
SELECT taskd.trigger($1, $2::text::jsonb, $3::text::jsonb);

-- name: run_claim
-- See taskd.claim_runs in the migrations: a function so that its plan is pinned.
-- The last row has no id when the claim held runs back (limits): held_back, retry_in.
SELECT id, task_id, payload, attempt, max_attempts, queue, tags, metadata, log_lines,
       concurrency_key, held_back, retry_in, cursors
  FROM taskd.claim_runs($1::text[], $2::text[], $3::int, $4::uuid, $5::float8, $6::text,
                        $7::text::jsonb);

-- name: run_complete_many
-- Write a batch of attempt outcomes. status is the run's next state: completed, failed,
-- queued (a retry at now() + retry_delay) or waiting (suspended by a wait until now() +
-- retry_delay: the attempt is not spent and gets no attempts row). The attempt row is written
-- with the same CAS. A run whose row another transaction holds is skipped, not waited for:
-- it comes back as a row with no status (still this worker's, its outcome to be written
-- again later), so one held run never stops the outcomes of the others.
WITH outcome AS (
    SELECT * FROM unnest($2::uuid[], $3::int[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::float8[], $9::boolean[])
        AS o (id, attempt, status, attempt_outcome, output, error, retry_delay, owes_hook)
), locked AS (
    SELECT r.id FROM taskd.runs r JOIN outcome o ON o.id = r.id
     WHERE r.status = 'executing' AND r.worker_id = $1 AND r.attempt = o.attempt
     ORDER BY r.id
       FOR NO KEY UPDATE OF r SKIP LOCKED
), updated AS (
    UPDATE taskd.runs r
       -- a cancel requested during the attempt wins over its retry, its wait or its failure
       SET status = CASE WHEN o.status IN ('queued', 'waiting', 'failed')
                          AND r.cancel_requested_at IS NOT NULL
                         THEN 'canceled' ELSE o.status END,
           output = o.output::jsonb,
           error = CASE WHEN o.status = 'waiting' THEN r.error ELSE o.error::jsonb END,
           run_at = CASE WHEN o.status IN ('queued', 'waiting')
                         THEN now() + make_interval(secs => o.retry_delay) ELSE r.run_at END,
           finished_at = CASE WHEN o.status IN ('queued', 'waiting')
                               AND r.cancel_requested_at IS NULL
                              THEN NULL ELSE now() END,
           attempt = CASE WHEN o.status = 'waiting' THEN r.attempt - 1 ELSE r.attempt END,
           worker_id = NULL,
           lease_expires_at = NULL
      FROM outcome o JOIN locked ON locked.id = o.id
     -- by id, not by the ctid the lock returned: a row updated and committed after this
     -- statement's snapshot (a heartbeat, a cancel request) is locked in its newest version,
     -- which the snapshot cannot see; the UPDATE finds the old one and follows it there
     WHERE r.id = o.id AND r.status = 'executing' AND r.worker_id = $1 AND r.attempt = o.attempt
    RETURNING r.id, o.attempt, r.attempt_started_at, r.queue, r.status, r.parent_id, r.task_id
), unlocked AS MATERIALIZED (
    -- (materialized: the ownership probe below then runs only for the few outcomes not
    -- locked, usually none, not for the whole batch)
    SELECT o.id, o.attempt FROM outcome o
     WHERE NOT EXISTS (SELECT 1 FROM locked l WHERE l.id = o.id)
), skipped AS (
    -- (this statement's snapshot: a run held by an open transaction still reads as ours)
    SELECT u.id FROM unlocked u
     WHERE EXISTS (SELECT 1 FROM taskd.runs r
                    WHERE r.id = u.id AND r.status = 'executing' AND r.worker_id = $1
                      AND r.attempt = u.attempt)
), recorded AS (
    INSERT INTO taskd.attempts (run_id, attempt, worker_id, started_at, finished_at, outcome, error)
    SELECT u.id, u.attempt, $1, u.attempt_started_at, now(), o.attempt_outcome, o.error::jsonb
      FROM updated u JOIN outcome o ON o.id = u.id
     WHERE o.status <> 'waiting'
), hooked AS (
    -- a failure the executor did not decide (an outcome the database refused, replaced by
    -- this one; an executor defect) has not run the task's on_failure hook: it is owed (see
    -- failure_hook_claim). An output the executor refused ran the hook already.
    INSERT INTO taskd.failure_hooks (run_id, task_id)
    SELECT u.id, u.task_id
      FROM updated u JOIN outcome o ON o.id = u.id
     WHERE u.status = 'failed' AND o.status = 'failed' AND o.owes_hook
    ON CONFLICT DO NOTHING
), notified AS (
    -- a retry due now must wake a daemon like a new run would; so must a slot freed in a
    -- queue with a concurrency limit (another daemon may start the next run now)
    SELECT pg_notify('taskd_wakeup', q.queue)
      FROM (SELECT u.queue FROM updated u JOIN outcome o ON o.id = u.id
             WHERE u.status = 'queued' AND o.retry_delay = 0
            UNION
            SELECT u.queue FROM updated u JOIN taskd.queues lq ON lq.name = u.queue
             WHERE lq.concurrency IS NOT NULL OR lq.concurrency_per_key IS NOT NULL) AS q
)
-- The notified CTE runs only if the statement reads it: a CROSS JOIN with its count does (a
-- LEFT JOIN whose columns nobody reads is removed by the planner, the NOTIFYs with it).
SELECT u.id, u.status, u.parent_id
  FROM updated u CROSS JOIN (SELECT count(*) FROM notified) AS n
UNION ALL
SELECT s.id, NULL, NULL FROM skipped s;

-- name: run_rescue
-- Hand back executing runs whose lease expired or whose worker is gone ($1). The lost attempt
-- counts: it gets an attempts row (outcome lost) and the run goes back to the queue, or ends
-- failed when its attempts are used up, or canceled when a cancel was requested meanwhile.
WITH lost AS (
    SELECT r.id, r.attempt, r.worker_id, r.attempt_started_at, r.queue, r.cancel_requested_at,
           coalesce(r.max_attempts, t.max_attempts, 3) AS max_attempts,
           jsonb_build_object(
               'type', 'WorkerLost',
               'message', format('lost with its worker %s (host %s, pid %s)%s', r.worker_id,
                                 coalesce(w.host, '?'), coalesce(w.pid::text, '?'),
                                 CASE WHEN r.lease_expires_at < now()
                                      THEN ': its lease expired' ELSE ': the worker is gone'
                                 END)) AS error
      FROM taskd.runs r
      LEFT JOIN taskd.tasks t ON t.id = r.task_id
      LEFT JOIN taskd.workers w ON w.id = r.worker_id
     WHERE r.lease_expires_at IS NOT NULL
       AND (r.lease_expires_at < now() OR r.worker_id = ANY($1::uuid[]))
     -- In runs_lease_idx's order, so that the plan walks the leased runs only, even on a table
     -- without statistics (a bulk load, a restore, an upgrade: id order then read the whole
     -- history through the primary key, at every start-up and every rescue).
     ORDER BY r.queue, r.concurrency_key, r.lease_expires_at
     LIMIT $2
       FOR UPDATE OF r SKIP LOCKED
), rescued AS (
    UPDATE taskd.runs r
       SET status = CASE WHEN lost.cancel_requested_at IS NOT NULL THEN 'canceled'
                         WHEN r.attempt >= lost.max_attempts THEN 'failed'
                         ELSE 'queued' END,
           error = lost.error,
           -- run_at unchanged: the run was due long ago and resumes ahead of newer runs
           finished_at = CASE WHEN lost.cancel_requested_at IS NULL
                               AND r.attempt < lost.max_attempts THEN NULL ELSE now() END,
           worker_id = NULL,
           lease_expires_at = NULL
      FROM lost
     -- the ids as an array too: looked up by primary key, never a hash join over the table
     WHERE r.id = lost.id AND r.id = ANY(ARRAY(SELECT lost.id FROM lost))
       AND r.status = 'executing' AND r.attempt = lost.attempt
    RETURNING r.id, r.status, lost.worker_id AS lost_worker, r.task_id, r.attempt
), recorded AS (
    INSERT INTO taskd.attempts (run_id, attempt, worker_id, started_at, finished_at, outcome, error)
    SELECT lost.id, lost.attempt, lost.worker_id, coalesce(lost.attempt_started_at, now()), now(),
           'lost', lost.error
      FROM lost JOIN rescued ON rescued.id = lost.id
), hooked AS (
    -- attempts used up: the task's on_failure hook is owed (see failure_hook_claim)
    INSERT INTO taskd.failure_hooks (run_id, task_id)
    SELECT id, task_id FROM rescued WHERE status = 'failed'
    ON CONFLICT DO NOTHING
), notified AS (
    SELECT pg_notify('taskd_wakeup', q.queue)
      FROM (SELECT DISTINCT lost.queue FROM lost JOIN rescued ON rescued.id = lost.id
             WHERE rescued.status = 'queued') AS q
)
SELECT rescued.id, rescued.status, rescued.lost_worker, rescued.task_id, rescued.attempt
  FROM rescued CROSS JOIN (SELECT count(*) FROM notified) AS n;

-- name: run_expire
-- Queued runs past their ttl end expired (a run's ttl ends once it starts).
WITH due AS (
    SELECT id FROM taskd.runs
     WHERE status = 'queued' AND expires_at IS NOT NULL AND expires_at <= now()
       AND started_at IS NULL  -- the ttl is about starting: retries never expire
     ORDER BY expires_at
     LIMIT $1
       FOR UPDATE SKIP LOCKED
)
UPDATE taskd.runs r
   SET status = 'expired', finished_at = now(),
       error = jsonb_build_object('type', 'Expired',
                                  'message', 'not started within its ttl')
  FROM due
 WHERE r.id = due.id AND r.status = 'queued'
RETURNING r.id, r.task_id;

-- name: run_fail_unknown
-- Due queued runs of tasks no live worker serves fail once they have waited $1 seconds, counted
-- from the later of their run_at and the moment their task became unserved (the latest stop of
-- a worker that served it): a deploy's gap between the old daemon's stop and the new one's
-- start fails nothing, and a delayed run waits for its time first. Each failed run's task gets
-- its on_failure hook (failure_hooks) from a daemon that serves it, if one ever does.
WITH service AS MATERIALIZED (
    SELECT task_id, live, served_until FROM taskd.task_service
), stale AS (
    SELECT r.id, greatest(r.run_at, s.served_until) AS since
      FROM taskd.runs r LEFT JOIN service s ON s.task_id = r.task_id
     WHERE r.status = 'queued' AND r.run_at <= now() - make_interval(secs => $1)
       -- (the served tasks as an array: the scan drops their runs before any join)
       AND r.task_id <> ALL (ARRAY(SELECT task_id FROM service WHERE live))
       AND s.live IS NOT TRUE
       AND (s.served_until IS NULL OR s.served_until <= now() - make_interval(secs => $1))
     LIMIT $2
       FOR UPDATE OF r SKIP LOCKED
), failed AS (
    UPDATE taskd.runs r
       SET status = 'failed', finished_at = now(),
           error = jsonb_build_object('type', 'UnknownTask',
               'message', format('no worker serves task %L (waited %s s)', r.task_id,
                                 round(extract(epoch FROM now() - stale.since))))
      FROM stale
     WHERE r.id = stale.id AND r.status = 'queued'
    RETURNING r.id, r.task_id
), hooked AS (
    INSERT INTO taskd.failure_hooks (run_id, task_id) SELECT id, task_id FROM failed
    ON CONFLICT DO NOTHING
)
SELECT id, task_id FROM failed;

-- name: task_list_served
-- Tasks some live worker serves.
SELECT DISTINCT unnest(tasks) FROM taskd.workers WHERE stopped_at IS NULL;

-- name: failure_hook_claim
-- Runs owed their task's on_failure hook, of the tasks this worker serves ($2), that nobody is
-- running the hook of: unclaimed, or claimed by a worker that has stopped or was declared gone
-- (its hook may have been cut short: it runs again, at least once in all). Oldest first.
WITH picked AS (
    SELECT h.run_id FROM taskd.failure_hooks h
     WHERE h.task_id = ANY($2::text[])
       AND (h.claimed_by IS NULL
            OR NOT EXISTS (SELECT 1 FROM taskd.workers w
                            WHERE w.id = h.claimed_by AND w.stopped_at IS NULL))
     ORDER BY h.created_at
     LIMIT $3
       FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE taskd.failure_hooks h SET claimed_by = $1, claimed_at = now()
      FROM picked WHERE h.run_id = picked.run_id
    RETURNING h.run_id, h.task_id
)
SELECT c.run_id, c.task_id, r.payload, r.attempt,
       coalesce(r.max_attempts, t.max_attempts) AS max_attempts, r.queue, r.tags, r.metadata,
       r.error, r.status
  FROM claimed c
  LEFT JOIN taskd.runs r ON r.id = c.run_id
  LEFT JOIN taskd.tasks t ON t.id = c.task_id;

-- name: failure_hook_done
DELETE FROM taskd.failure_hooks WHERE run_id = ANY($1::uuid[]) AND claimed_by = $2;

-- name: failure_hook_prune
-- Owed hooks of runs the retention deleted (a task no daemon served again meanwhile).
WITH doomed AS (
    SELECT h.run_id FROM taskd.failure_hooks h
     WHERE NOT EXISTS (SELECT 1 FROM taskd.runs r WHERE r.id = h.run_id)
     LIMIT $1
       FOR UPDATE SKIP LOCKED
)
DELETE FROM taskd.failure_hooks h USING doomed WHERE h.run_id = doomed.run_id;

-- name: worker_report
-- What this worker's reconciliation or rescue found (see daemon/taskd/worker/report.py).
UPDATE taskd.workers SET last_report = $2::text::jsonb WHERE id = $1;

-- name: run_wake_due
-- Waiting runs whose wake-up time has come go back to the queue (oldest first, a batch, SKIP
-- LOCKED), and the daemons serving their queues are woken.
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

-- name: run_wake_completed_tokens
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

-- name: token_create
-- A retry of a creation whose commit went unknown (the connection lost) finds the first
-- try's token (same id): nothing is returned, and token_expiry reads it.
INSERT INTO taskd.wait_tokens (id, run_id, expires_at)
VALUES ($1, $2, now() + make_interval(secs => $3))
ON CONFLICT (id) DO NOTHING
RETURNING expires_at;

-- name: token_expiry
SELECT expires_at FROM taskd.wait_tokens WHERE id = $1 AND run_id = $2;

-- name: token_await
-- wait.for_token ($2: the run) reads its token. Its own run marks it awaited (a completion
-- then queues the run if it waits, or the wake loop does once it waits), and takes completed
-- data as seen. A token another transaction holds (a completion not yet committed) is read as
-- last committed, not waited for: held. now: the database's clock, which times tokens out.
WITH locked AS (
    SELECT t.id FROM taskd.wait_tokens t WHERE t.id = $1 FOR UPDATE SKIP LOCKED
), marked AS (
    UPDATE taskd.wait_tokens t
       SET awaited = t.awaited OR t.run_id = $2,
           unseen = t.unseen AND NOT (t.status = 'completed' AND t.run_id = $2)
      FROM locked WHERE t.id = locked.id
    RETURNING t.status, t.data, t.expires_at
)
SELECT m.status, m.data, m.expires_at, false AS held, now() AS now FROM marked m
UNION ALL
SELECT t.status, t.data, t.expires_at, true, now() FROM taskd.wait_tokens t
 WHERE t.id = $1 AND NOT EXISTS (SELECT FROM locked);

-- name: token_time_out
-- A pending token past its expiry times out (once). A token another transaction holds (being
-- completed) is skipped: its run reads it again.
UPDATE taskd.wait_tokens SET status = 'timed_out', completed_at = now()
 WHERE id = (SELECT t.id FROM taskd.wait_tokens t WHERE t.id = $1 FOR UPDATE SKIP LOCKED)
   AND status = 'pending' AND expires_at <= now()
RETURNING status;

-- name: token_complete
SELECT taskd.complete_token($1, $2::text::jsonb);

-- name: run_cancel
SELECT taskd.cancel($1);

-- name: run_list_cancel_requested
SELECT id FROM taskd.runs
 WHERE id = ANY($1::uuid[]) AND status = 'executing' AND cancel_requested_at IS NOT NULL;

-- name: run_replay
-- A new run with the same task, payload, queue, priority, tags and attempt limit.
WITH inserted AS (
    INSERT INTO taskd.runs (id, task_id, queue, payload, priority, max_attempts, tags,
                            replayed_from, concurrency_key)
    SELECT $2, task_id, queue, payload, priority, max_attempts, tags, id, concurrency_key
      FROM taskd.runs WHERE id = $1
    RETURNING id, queue
)
SELECT inserted.id, pg_notify('taskd_wakeup', inserted.queue) FROM inserted;

-- name: queue_depths
SELECT queue,
       count(*) FILTER (WHERE run_at <= now()) AS due,
       count(*) FILTER (WHERE run_at > now()) AS delayed,
       min(run_at) FILTER (WHERE run_at <= now()) AS oldest_due
  FROM taskd.runs WHERE status = 'queued'
 GROUP BY queue ORDER BY queue;

-- name: queue_settings
SELECT name, concurrency, concurrency_per_key, rate_limit, rate_period, paused, overridden,
       declared, updated_at
  FROM taskd.queues ORDER BY name;

-- name: queue_sync
-- The queues this daemon's tasks declare, with the limits in the code. Limits an operator set
-- (overridden) stay; the code's are kept in declared for `taskd queues reset`.
INSERT INTO taskd.queues AS q (name, concurrency, concurrency_per_key, rate_limit, rate_period,
                               declared)
SELECT * FROM unnest($1::text[], $2::int[], $3::int[], $4::int[], $5::float8[], $6::jsonb[])
ON CONFLICT (name) DO UPDATE
   SET declared = excluded.declared,
       concurrency = CASE WHEN q.overridden THEN q.concurrency ELSE excluded.concurrency END,
       concurrency_per_key = CASE WHEN q.overridden THEN q.concurrency_per_key
                                  ELSE excluded.concurrency_per_key END,
       rate_limit = CASE WHEN q.overridden THEN q.rate_limit ELSE excluded.rate_limit END,
       rate_period = CASE WHEN q.overridden THEN q.rate_period ELSE excluded.rate_period END,
       updated_at = now()
 WHERE q.declared IS DISTINCT FROM excluded.declared
    OR (NOT q.overridden
        AND (q.concurrency, q.concurrency_per_key, q.rate_limit, q.rate_period)
            IS DISTINCT FROM (excluded.concurrency, excluded.concurrency_per_key,
                              excluded.rate_limit, excluded.rate_period));

-- name: queue_pause
-- Pause ($2 true) or resume a queue; a resumed queue wakes the daemons at once.
WITH changed AS (
    INSERT INTO taskd.queues AS q (name, paused) VALUES ($1, $2)
    ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = now()
    RETURNING q.name, q.paused
)
SELECT changed.name, CASE WHEN NOT changed.paused THEN pg_notify('taskd_wakeup', changed.name) END
  FROM changed;

-- name: queue_set_limits
-- An operator's limits: the fields flagged ($3, $5, $8) change, the others stay. They hold
-- until `taskd queues reset`, whatever the code declares. Wakes the daemons: a raised limit
-- may let runs start now.
WITH changed AS (
    INSERT INTO taskd.queues AS q (name, concurrency, concurrency_per_key, rate_limit,
                                   rate_period, overridden)
    VALUES ($1, $2, $4, $6, $7, true)
    ON CONFLICT (name) DO UPDATE
       SET concurrency = CASE WHEN $3 THEN excluded.concurrency ELSE q.concurrency END,
           concurrency_per_key = CASE WHEN $5 THEN excluded.concurrency_per_key
                                      ELSE q.concurrency_per_key END,
           rate_limit = CASE WHEN $8 THEN excluded.rate_limit ELSE q.rate_limit END,
           rate_period = CASE WHEN $8 THEN excluded.rate_period ELSE q.rate_period END,
           overridden = true, updated_at = now()
    RETURNING q.name
)
SELECT changed.name, pg_notify('taskd_wakeup', changed.name) FROM changed;

-- name: queue_reset
-- Back to the limits the code declares (as the last daemon that started registered them).
WITH changed AS (
    UPDATE taskd.queues q
       SET concurrency = (q.declared->>'concurrency')::int,
           concurrency_per_key = (q.declared->>'concurrency_per_key')::int,
           rate_limit = (q.declared->>'rate_limit')::int,
           rate_period = (q.declared->>'rate_period')::float8,
           overridden = false, updated_at = now()
     WHERE q.name = $1
    RETURNING q.name
)
SELECT changed.name, pg_notify('taskd_wakeup', changed.name) FROM changed;

-- name: queue_executing
-- Runs executing per queue (through runs_lease_idx: executing runs are the leased ones).
SELECT queue, count(*) AS executing FROM taskd.runs
 WHERE lease_expires_at IS NOT NULL GROUP BY queue;

-- name: run_count_unserved
SELECT task_id, count(*) AS queued, min(created_at) AS oldest
  FROM taskd.runs WHERE status = 'queued' AND task_id <> ALL($1::text[])
 GROUP BY task_id ORDER BY task_id;

-- name: run_release_many
-- Hand runs back to the queue without spending an attempt (drain, shutdown); a run whose
-- cancel was requested meanwhile ends canceled instead. started_at stays: a started run's
-- ttl is over (it never expires), and its stored log lines count against the per-run cap.
UPDATE taskd.runs r
   SET status = CASE WHEN r.cancel_requested_at IS NULL THEN 'queued' ELSE 'canceled' END,
       finished_at = CASE WHEN r.cancel_requested_at IS NULL THEN NULL ELSE now() END,
       attempt = r.attempt - 1, worker_id = NULL, lease_expires_at = NULL,
       attempt_started_at = NULL
  FROM unnest($2::uuid[], $3::int[]) AS h (id, attempt)
 WHERE r.id = h.id AND r.status = 'executing' AND r.worker_id = $1 AND r.attempt = h.attempt
RETURNING r.id;

-- name: run_get
-- max_attempts: the run's override, else its task's (as the last daemon registered it).
SELECT r.id, r.task_id, r.queue, r.status, r.payload, r.output, r.error, r.priority, r.run_at,
       r.attempt, coalesce(r.max_attempts, t.max_attempts) AS max_attempts, r.tags,
       r.created_at, r.started_at, r.finished_at, r.worker_id, r.expires_at,
       r.cancel_requested_at, r.replayed_from, r.event_id, r.schedule_id, r.scheduled_for,
       r.metadata, r.parent_id, nullif(r.concurrency_key, '') AS concurrency_key
  FROM taskd.runs r LEFT JOIN taskd.tasks t ON t.id = r.task_id
 WHERE r.id = $1;

-- name: attempt_list
SELECT attempt, worker_id, started_at, finished_at, outcome, error
  FROM taskd.attempts WHERE run_id = $1 ORDER BY attempt;

-- name: event_send
SELECT taskd.send_event($1, $2::text::jsonb);

-- name: event_list
SELECT id, name, payload, runs, created_at FROM taskd.events
 WHERE ($1::text IS NULL OR name = $1)
 ORDER BY id DESC
 LIMIT $2;

-- name: subscription_clear
-- (with subscription_add, in one transaction: these tasks' subscriptions become exactly
-- the given pairs; a name removed from the code stops starting the task)
DELETE FROM taskd.subscriptions WHERE task_id = ANY($1::text[]);

-- name: subscription_retire_unserved
-- Subscriptions of tasks that no live worker serves and that none has served for $1 seconds
-- (their code was removed): an event no longer creates runs nobody will run. A daemon that
-- serves the task again subscribes it again at its start (subscription_sync).
DELETE FROM taskd.subscriptions s
 WHERE NOT EXISTS (SELECT 1 FROM taskd.task_service t
                    WHERE t.task_id = s.task_id
                      AND (t.live OR t.served_until > now() - make_interval(secs => $1)))
RETURNING s.event_name, s.task_id;

-- name: subscription_list
SELECT task_id, array_agg(event_name ORDER BY event_name) AS events
  FROM taskd.subscriptions GROUP BY task_id;

-- name: subscription_add
INSERT INTO taskd.subscriptions (event_name, task_id)
SELECT * FROM unnest($1::text[], $2::text[])
ON CONFLICT DO NOTHING;

-- name: run_list
-- Newest first (ids are UUIDv7); keyset pagination on id. The store appends one condition
-- per filter given ("AND ..."), then the order and limit: a statement per combination of
-- filters, so that each gets its own plan (runs_task_idx for a task, runs_tags_idx for a
-- tag, the primary key for a created range) instead of one generic plan for all.
SELECT r.id, r.task_id, r.queue, r.status, r.payload, r.output, r.error, r.priority, r.run_at,
       r.attempt, coalesce(r.max_attempts, t.max_attempts) AS max_attempts, r.tags,
       r.created_at, r.started_at, r.finished_at, r.worker_id, r.expires_at,
       r.cancel_requested_at, r.replayed_from, r.event_id, r.schedule_id, r.scheduled_for,
       r.metadata, r.parent_id, nullif(r.concurrency_key, '') AS concurrency_key
  FROM taskd.runs r LEFT JOIN taskd.tasks t ON t.id = r.task_id
 WHERE true

-- name: run_list_summary
-- The same, without payload and output (the admin API's listing: pages stay small).
SELECT r.id, r.task_id, r.queue, r.status, r.error, r.priority, r.run_at,
       r.attempt, coalesce(r.max_attempts, t.max_attempts) AS max_attempts, r.tags,
       r.created_at, r.started_at, r.finished_at, r.worker_id, r.expires_at,
       r.cancel_requested_at, r.replayed_from, r.event_id, r.schedule_id, r.scheduled_for,
       r.metadata, r.parent_id, nullif(r.concurrency_key, '') AS concurrency_key
  FROM taskd.runs r LEFT JOIN taskd.tasks t ON t.id = r.task_id
 WHERE true

-- name: run_children
SELECT id, task_id, status FROM taskd.runs WHERE parent_id = $1 ORDER BY id LIMIT $2;

-- name: run_set_metadata
-- Merge keys into the metadata of a run this worker executes (same compare-and-set as the
-- completion); NULL when the run is no longer this attempt's.
UPDATE taskd.runs SET metadata = coalesce(metadata, '{}') || $4::text::jsonb
 WHERE id = $1 AND status = 'executing' AND worker_id = $2 AND attempt = $3
RETURNING true;

-- name: step_list
SELECT name, status, result, error, attempts, run_attempt, started_at, finished_at
  FROM taskd.steps WHERE run_id = $1 ORDER BY started_at, name;

-- name: step_list_first
-- step_list, its first $2 rows (NULL: all of them).
SELECT name, status, result, error, attempts, run_attempt, started_at, finished_at
  FROM taskd.steps WHERE run_id = $1 ORDER BY started_at, name LIMIT $2;

-- name: step_record
-- Record a step's outcome, only while the run is this worker's attempt (the completion's
-- compare-and-set); a completed step is never overwritten. FOR SHARE makes the check a true
-- compare-and-set: a rescue or cancel changing the run right now is waited for and the row
-- checked again (a plain read would see the statement's snapshot and record the step of a
-- run already taken from this worker); steps of one run still record side by side.
INSERT INTO taskd.steps AS s (run_id, name, status, result, error, attempts, run_attempt,
                              started_at, finished_at)
SELECT $1, $2, $5, $6::text::jsonb, $7::text::jsonb, $8, $4, $9, now()
 WHERE EXISTS (SELECT 1 FROM taskd.runs r
                WHERE r.id = $1 AND r.status = 'executing' AND r.worker_id = $3
                  AND r.attempt = $4
                  FOR SHARE)
ON CONFLICT (run_id, name) DO UPDATE
   SET status = excluded.status, result = excluded.result, error = excluded.error,
       attempts = s.attempts + excluded.attempts, run_attempt = excluded.run_attempt,
       started_at = excluded.started_at, finished_at = excluded.finished_at
 WHERE s.status <> 'completed'
RETURNING true;

-- name: children_create
-- trigger_and_wait: the children and the step that records their ids, in one statement, under
-- the parent's compare-and-set ($1 parent, $2 worker, $3 attempt, $4 step name): a parent
-- that executes again finds the step and creates nothing. $7, $8, $13: the runs to create
-- (id, payload, idempotency key); $12: every id the step records, including runs that
-- already held their idempotency key. Returns whether the step was written.
WITH owner AS (
    -- FOR SHARE: waits for a concurrent change of the parent and checks it again (see
    -- step_record)
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
                            concurrency_key, idempotency_key)
    SELECT u.id, $5, coalesce($6, (SELECT queue FROM task), 'default'), u.payload::jsonb, $1,
           $9, $10, $11, u.key
      FROM unnest($7::uuid[], $8::text[], $13::text[]) AS u (id, payload, key)
     WHERE EXISTS (SELECT 1 FROM step)
    RETURNING queue
), notified AS (
    SELECT pg_notify('taskd_wakeup', q.queue) FROM (SELECT DISTINCT queue FROM inserted) AS q
)
SELECT (SELECT count(*) FROM step) AS recorded, (SELECT count(*) FROM notified) AS queues;

-- name: children_recorded
-- The ids a children step records, when this attempt wrote it: a retry of children_create
-- whose first try committed unseen (the connection lost) finds its own ids here.
SELECT result FROM taskd.steps WHERE run_id = $1 AND name = $2 AND run_attempt = $3;

-- name: children_results
SELECT id, task_id, status, output, error FROM taskd.runs WHERE id = ANY($1::uuid[]);

-- name: parents_wake
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

-- name: run_log_insert_many
-- One batch of ctx.log lines, then one NOTIFY for every tail (`taskd logs -f`) to read them.
WITH inserted AS (
    INSERT INTO taskd.run_logs (run_id, task_id, attempt, at, level, message, fields)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::timestamptz[], $5::text[],
                         $6::text[], $7::text[]::jsonb[])
    RETURNING id
)
SELECT pg_notify('taskd_logs', max(id)::text) FROM inserted;

-- name: run_log_list
-- Lines after a cursor, oldest first; filters are optional ($2 run, $3 task, $4 levels).
SELECT l.id, l.run_id, l.task_id, l.attempt, l.at, l.level, l.message, l.fields
  FROM taskd.run_logs l
 WHERE l.id > $1
   AND ($2::uuid IS NULL OR l.run_id = $2)
   AND ($3::text IS NULL OR l.task_id = $3)
   AND ($4::text[] IS NULL OR l.level = ANY($4))
 ORDER BY l.id
 LIMIT $5;

-- name: run_log_recent
-- The newest lines (newest first; the caller reverses them).
SELECT l.id, l.run_id, l.task_id, l.attempt, l.at, l.level, l.message, l.fields
  FROM taskd.run_logs l
 WHERE ($1::uuid IS NULL OR l.run_id = $1)
   AND ($2::text IS NULL OR l.task_id = $2)
   AND ($3::text[] IS NULL OR l.level = ANY($3))
 ORDER BY l.id DESC
 LIMIT $4;

-- name: run_log_of_run
-- One run's lines, oldest first (the index on (run_id, id)).
SELECT l.id, l.run_id, l.task_id, l.attempt, l.at, l.level, l.message, l.fields
  FROM taskd.run_logs l
 WHERE l.run_id = $1 AND l.id > $2
 ORDER BY l.id
 LIMIT $3;

-- name: prune_runs
-- Finished runs older than the retention, oldest first, in one small batch: along the
-- primary key (ids begin with their creation time, $1 is the id of the cutoff moment), with
-- their attempts, log lines, steps and wait tokens. SKIP LOCKED: never waits on a run
-- something else holds. Only UUIDv7 ids tell their creation time: a hand-made id of another
-- version may sort below the cutoff whatever its age, and is never pruned.
-- $4: the last id the pass deleted (NULL at its start; returned ids give it). Each batch
-- starts after the last one, so the old runs that are not finished (queued runs of a task no
-- daemon serves, a paused queue, a long wait) are read once per pass, not once per batch; a
-- run skipped as locked waits for the next pass.
-- A child whose parent has not finished stays, however old: the parent reads the outcomes
-- of its children when it resumes (trigger_and_wait), and may wait longer than the retention.
WITH doomed AS (
    SELECT id FROM taskd.runs r
     WHERE id < $1 AND id > coalesce($4, '00000000-0000-0000-0000-000000000000'::uuid)
       AND finished_at < $2 AND get_byte(uuid_send(id), 6) >> 4 = 7
       AND status IN ('completed', 'failed', 'canceled', 'expired')
       AND NOT EXISTS (SELECT 1 FROM taskd.runs p
                        WHERE p.id = r.parent_id
                          AND p.status NOT IN ('completed', 'failed', 'canceled', 'expired'))
     ORDER BY id
     LIMIT $3
       FOR UPDATE OF r SKIP LOCKED
), attempts AS (
    DELETE FROM taskd.attempts a USING doomed WHERE a.run_id = doomed.id
), logs AS (
    DELETE FROM taskd.run_logs l USING doomed WHERE l.run_id = doomed.id
), steps AS (
    DELETE FROM taskd.steps s USING doomed WHERE s.run_id = doomed.id
), tokens AS (
    DELETE FROM taskd.wait_tokens t USING doomed WHERE t.run_id = doomed.id
)
DELETE FROM taskd.runs r USING doomed WHERE r.id = doomed.id RETURNING r.id;

-- name: prune_events
WITH doomed AS (
    -- along the primary key: event ids are UUIDv7 too ($3: the id of the cutoff moment)
    SELECT id FROM taskd.events WHERE id < $3 AND created_at < $1
     ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
)
DELETE FROM taskd.events e USING doomed WHERE e.id = doomed.id;

-- name: prune_idempotency_keys
-- Keys past their ttl are free to take over already; their rows go in small batches.
WITH doomed AS (
    SELECT task_id, idempotency_key FROM taskd.idempotency_keys
     WHERE expires_at < now() ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
)
DELETE FROM taskd.idempotency_keys k USING doomed
 WHERE k.task_id = doomed.task_id AND k.idempotency_key = doomed.idempotency_key
   AND k.expires_at < now();

-- name: prune_workers
-- The stop time of a pruned worker is kept in its tasks' last_served_at: the unknown-task
-- timeout counts from when a task became unserved, after its workers' rows are gone too.
-- Tasks rows are locked in id order: two daemons pruning at once cannot deadlock on them.
WITH pruned AS (
    DELETE FROM taskd.workers WHERE stopped_at < $1 RETURNING tasks, stopped_at
), last AS (
    SELECT t.id, max(p.stopped_at) AS at FROM pruned p, unnest(p.tasks) AS t (id) GROUP BY t.id
), locked AS (
    SELECT t.id, last.at FROM taskd.tasks t JOIN last ON last.id = t.id
     ORDER BY t.id
       FOR UPDATE OF t
), stamped AS (
    UPDATE taskd.tasks t SET last_served_at = greatest(t.last_served_at, locked.at)
      FROM locked WHERE t.id = locked.id
)
SELECT count(*) FROM pruned;

-- name: table_stats
-- Live and dead rows of taskd's tables (dead rows are bloat waiting for vacuum).
SELECT relname AS table, n_live_tup AS live, n_dead_tup AS dead
  FROM pg_stat_user_tables WHERE schemaname = 'taskd' ORDER BY relname;

-- name: schedule_list
SELECT s.id, s.task_id, s.cron, s.timezone, s.payload, s.external_id, s.dedup_key, s.catch_up,
       s.declared, s.active, s.last_fired_at, s.created_at, s.updated_at,
       (SELECT max(r.id::text) FROM taskd.runs r WHERE r.schedule_id = s.id
          AND r.scheduled_for = s.last_fired_at) AS last_run_id
  FROM taskd.schedules s
 WHERE ($1::text IS NULL OR s.task_id = $1) AND ($2::boolean IS NULL OR s.active = $2)
 ORDER BY s.id;

-- name: schedule_active
-- What the scheduler reads at every tick: only the columns it uses (no last_run_id lookup).
SELECT id, task_id, cron, timezone, payload, external_id, catch_up, last_fired_at, created_at
  FROM taskd.schedules WHERE active;

-- name: schedule_get
SELECT s.id, s.task_id, s.cron, s.timezone, s.payload, s.external_id, s.dedup_key, s.catch_up,
       s.declared, s.active, s.last_fired_at, s.created_at, s.updated_at,
       (SELECT max(r.id::text) FROM taskd.runs r WHERE r.schedule_id = s.id
          AND r.scheduled_for = s.last_fired_at) AS last_run_id
  FROM taskd.schedules s WHERE s.id = $1;

-- name: schedule_upsert
-- Create, or (same dedup_key) update in place: creating twice with one key is idempotent.
INSERT INTO taskd.schedules (id, task_id, cron, timezone, payload, external_id, dedup_key,
                             catch_up, declared)
VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7, $8, $9)
ON CONFLICT (dedup_key) DO UPDATE
   SET task_id = excluded.task_id, cron = excluded.cron, timezone = excluded.timezone,
       payload = excluded.payload, external_id = excluded.external_id,
       catch_up = excluded.catch_up, updated_at = now()
RETURNING id;

-- name: schedule_declare
-- A schedule declared in code: id = the task id; a changed definition updates it.
INSERT INTO taskd.schedules (id, task_id, cron, timezone, catch_up, declared, active)
VALUES ($1, $1, $2, $3, $4, true, true)
ON CONFLICT (id) DO UPDATE
   SET cron = excluded.cron, timezone = excluded.timezone, catch_up = excluded.catch_up,
       declared = true, active = true, updated_at = now()
 WHERE (taskd.schedules.cron, taskd.schedules.timezone, taskd.schedules.catch_up,
        taskd.schedules.active)
       IS DISTINCT FROM (excluded.cron, excluded.timezone, excluded.catch_up, true);

-- name: schedule_retire_declared
-- Declared schedules whose code no longer declares them: tasks registered here without a
-- schedule ($1), or tasks no live worker serves any more ($2: the tasks served).
UPDATE taskd.schedules SET active = false, updated_at = now()
 WHERE declared AND active
   AND (task_id = ANY($1::text[]) OR task_id <> ALL($2::text[]))
RETURNING id;

-- name: schedule_update
UPDATE taskd.schedules
   SET cron = coalesce($2, cron), timezone = coalesce($3, timezone),
       payload = CASE WHEN $4::boolean THEN $5::text::jsonb ELSE payload END,
       external_id = CASE WHEN $6::boolean THEN $7 ELSE external_id END,
       catch_up = coalesce($8, catch_up), updated_at = now()
 WHERE id = $1
RETURNING id;

-- name: schedule_set_active
UPDATE taskd.schedules SET active = $2, updated_at = now() WHERE id = $1 RETURNING id;

-- name: schedule_delete
DELETE FROM taskd.schedules WHERE id = $1 RETURNING id;

-- name: schedule_notify
SELECT pg_notify('taskd_schedules', $1);

-- name: schedule_fire
-- One run for (schedule, fire time); a second daemon firing the same time inserts nothing.
-- last_fired_at only moves forward.
WITH fired AS (
    INSERT INTO taskd.runs (id, task_id, queue, payload, schedule_id, scheduled_for)
    SELECT $1, s.task_id, coalesce(t.queue, 'default'), $3::text::jsonb, s.id, $2
      FROM taskd.schedules s LEFT JOIN taskd.tasks t ON t.id = s.task_id
     WHERE s.id = $4 AND s.active
    ON CONFLICT (schedule_id, scheduled_for) WHERE schedule_id IS NOT NULL DO NOTHING
    RETURNING queue
), advanced AS (
    UPDATE taskd.schedules SET last_fired_at = $2
     WHERE id = $4 AND (last_fired_at IS NULL OR last_fired_at < $2)
)
SELECT pg_notify('taskd_wakeup', queue) IS NOT NULL FROM fired;

-- name: schedule_skip_to
-- catch_up = none: missed fire times are passed over without runs.
UPDATE taskd.schedules SET last_fired_at = $2
 WHERE id = $1 AND (last_fired_at IS NULL OR last_fired_at < $2);
