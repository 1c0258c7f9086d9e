-- Worker rows, their session locks, heartbeats and reports.
-- Loaded by store/workers.py (store/queries.py: blocks headed `-- name: NAME`).

-- name: register
INSERT INTO taskd.workers (id, host, pid, version, concurrency, queues, tasks, lock_key, process,
                           task_versions, version_policy)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::text[], $11);

-- name: lock
-- On the worker's own session, for its whole life (released when the session ends). Polled,
-- never waited for: a blocking pg_advisory_lock would wait, unseen by the session's probe,
-- behind whoever holds the key.
SELECT pg_try_advisory_lock($1);

-- name: free_orphan_locks
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

-- name: list_unlocked
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

-- name: mark_gone
UPDATE taskd.workers SET stopped_at = now() WHERE id = ANY($1::uuid[]) AND stopped_at IS NULL;

-- name: list
SELECT w.id, w.host, w.pid, w.version, w.concurrency, w.queues, w.tasks, w.started_at,
       w.heartbeat_at, w.stopped_at, w.last_report, w.task_versions, w.version_policy,
       (SELECT count(*) FROM taskd.runs r
         WHERE r.lease_expires_at IS NOT NULL AND r.worker_id = w.id) AS executing
  FROM taskd.workers w
 WHERE w.stopped_at IS NULL
 ORDER BY w.started_at;

-- name: heartbeat
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

-- name: stop
UPDATE taskd.workers SET stopped_at = now(), heartbeat_at = now() WHERE id = $1;

-- name: report
-- What this worker's reconciliation or rescue found (see daemon/taskd/worker/report.py).
UPDATE taskd.workers SET last_report = $2::text::jsonb WHERE id = $1;
