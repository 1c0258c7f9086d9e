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
INSERT INTO taskd.workers (id, host, pid, version, concurrency, queues, tasks, lock_key)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8);

-- name: worker_lock
-- On the worker's own session, for its whole life (released when the session ends).
SELECT pg_advisory_lock($1);

-- name: worker_list_unlocked
-- Workers not known to be stopped whose advisory lock no session holds: their process (or
-- its connection) is gone. A bigint advisory key shows in pg_locks as classid (high 32 bits)
-- and objid (low 32 bits) with objsubid 1.
SELECT w.id, w.host, w.pid
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
       w.heartbeat_at, w.stopped_at,
       (SELECT count(*) FROM taskd.runs r
         WHERE r.lease_expires_at IS NOT NULL AND r.worker_id = w.id) AS executing
  FROM taskd.workers w
 WHERE w.stopped_at IS NULL
 ORDER BY w.started_at;

-- name: worker_heartbeat
-- One statement per daemon per interval, whatever the number of runs it holds ($3, $4: their
-- ids and attempts). Returns whether the worker was declared gone meanwhile (stopped_at set
-- by another daemon's rescuer): it must then stop, its runs belong to others.
WITH renewed AS (
    UPDATE taskd.runs r SET lease_expires_at = now() + make_interval(secs => $2)
      FROM unnest($3::uuid[], $4::int[]) AS h (id, attempt)
     WHERE r.id = h.id AND r.attempt = h.attempt AND r.worker_id = $1
       AND r.status = 'executing'
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
-- with the same CAS.
WITH outcome AS (
    SELECT * FROM unnest($2::uuid[], $3::int[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::float8[])
        AS o (id, attempt, status, attempt_outcome, output, error, retry_delay)
), updated AS (
    UPDATE taskd.runs r
       -- a cancel requested during the attempt wins over its retry or its wait
       SET status = CASE WHEN o.status IN ('queued', 'waiting')
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
      FROM outcome o
     WHERE r.id = o.id AND r.status = 'executing' AND r.worker_id = $1 AND r.attempt = o.attempt
    RETURNING r.id, o.attempt, r.attempt_started_at, r.queue, r.status, r.parent_id
), recorded AS (
    INSERT INTO taskd.attempts (run_id, attempt, worker_id, started_at, finished_at, outcome, error)
    SELECT u.id, u.attempt, $1, u.attempt_started_at, now(), o.attempt_outcome, o.error::jsonb
      FROM updated u JOIN outcome o ON o.id = u.id
     WHERE o.status <> 'waiting'
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
  FROM updated u CROSS JOIN (SELECT count(*) FROM notified) AS n;

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
-- Queued runs of tasks no live worker serves, waiting longer than $2 seconds, fail.
WITH stale AS (
    SELECT id FROM taskd.runs
     WHERE status = 'queued' AND task_id <> ALL($1::text[])
       AND created_at < now() - make_interval(secs => $2)
     LIMIT $3
       FOR UPDATE SKIP LOCKED
)
UPDATE taskd.runs r
   SET status = 'failed', finished_at = now(),
       error = jsonb_build_object('type', 'UnknownTask',
           'message', format('no worker serves task %L (waited %s s)', r.task_id, $2))
  FROM stale
 WHERE r.id = stale.id AND r.status = 'queued'
RETURNING r.id, r.task_id;

-- name: task_list_served
-- Tasks some live worker serves.
SELECT DISTINCT unnest(tasks) FROM taskd.workers WHERE stopped_at IS NULL;

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
-- Runs whose token was completed while they were still executing, and that wait now.
WITH due AS (
    SELECT r.id FROM taskd.wait_tokens t JOIN taskd.runs r ON r.id = t.run_id
     WHERE t.unseen AND r.status = 'waiting'
     LIMIT $1
       FOR UPDATE OF r SKIP LOCKED
), woken AS (
    UPDATE taskd.runs r SET status = 'queued', run_at = now()
      FROM due WHERE r.id = due.id AND r.status = 'waiting'
    RETURNING r.id, r.task_id, r.queue
), notified AS (
    SELECT pg_notify('taskd_wakeup', q.queue) FROM (SELECT DISTINCT queue FROM woken) AS q
)
SELECT woken.id, woken.task_id FROM woken CROSS JOIN (SELECT count(*) FROM notified) AS n;

-- name: token_create
INSERT INTO taskd.wait_tokens (id, run_id, expires_at)
VALUES ($1, $2, now() + make_interval(secs => $3))
RETURNING expires_at;

-- name: token_get
SELECT id, run_id, status, data, created_at, expires_at, completed_at
  FROM taskd.wait_tokens WHERE id = $1;

-- name: token_seen
UPDATE taskd.wait_tokens SET unseen = false WHERE id = $1 AND unseen;

-- name: token_time_out
-- A pending token past its expiry times out (once).
UPDATE taskd.wait_tokens SET status = 'timed_out', completed_at = now()
 WHERE id = $1 AND status = 'pending' AND expires_at <= now()
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
-- cancel was requested meanwhile ends canceled instead.
UPDATE taskd.runs r
   SET status = CASE WHEN r.cancel_requested_at IS NULL THEN 'queued' ELSE 'canceled' END,
       finished_at = CASE WHEN r.cancel_requested_at IS NULL THEN NULL ELSE now() END,
       attempt = r.attempt - 1, worker_id = NULL, lease_expires_at = NULL,
       attempt_started_at = NULL,
       started_at = CASE WHEN r.attempt = 1 THEN NULL ELSE r.started_at END
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

-- name: step_record
-- Record a step's outcome, only while the run is this worker's attempt (the completion's
-- compare-and-set); a completed step is never overwritten.
INSERT INTO taskd.steps AS s (run_id, name, status, result, error, attempts, run_attempt,
                              started_at, finished_at)
SELECT $1, $2, $5, $6::text::jsonb, $7::text::jsonb, $8, $4, $9, now()
 WHERE EXISTS (SELECT 1 FROM taskd.runs r
                WHERE r.id = $1 AND r.status = 'executing' AND r.worker_id = $3
                  AND r.attempt = $4)
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
    SELECT 1 FROM taskd.runs r
     WHERE r.id = $1 AND r.status = 'executing' AND r.worker_id = $2 AND r.attempt = $3
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

-- name: children_results
SELECT id, task_id, status, output, error FROM taskd.runs WHERE id = ANY($1::uuid[]);

-- name: parents_wake
-- Waiting parents of these runs whose children have all finished go back to the queue. Run
-- after the children's outcomes committed, as a statement of its own: of two daemons that
-- finish a parent's last two children at once, the later one sees both finished.
WITH woken AS (
    UPDATE taskd.runs p SET status = 'queued', run_at = now()
     WHERE p.id IN (SELECT DISTINCT c.parent_id FROM taskd.runs c
                     WHERE c.id = ANY($1::uuid[]) AND c.parent_id IS NOT NULL)
       AND p.status = 'waiting'
       AND NOT EXISTS (SELECT 1 FROM taskd.runs s
                        WHERE s.parent_id = p.id
                          AND s.status NOT IN ('completed', 'failed', 'canceled', 'expired'))
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
-- their attempts and log lines. SKIP LOCKED: never waits on a run something else holds.
WITH doomed AS (
    SELECT id FROM taskd.runs
     WHERE id < $1 AND finished_at < $2
       AND status IN ('completed', 'failed', 'canceled', 'expired')
     ORDER BY id
     LIMIT $3
       FOR UPDATE SKIP LOCKED
), attempts AS (
    DELETE FROM taskd.attempts a USING doomed WHERE a.run_id = doomed.id
), logs AS (
    DELETE FROM taskd.run_logs l USING doomed WHERE l.run_id = doomed.id
), steps AS (
    DELETE FROM taskd.steps s USING doomed WHERE s.run_id = doomed.id
)
DELETE FROM taskd.runs r USING doomed WHERE r.id = doomed.id;

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
DELETE FROM taskd.workers WHERE stopped_at < $1;

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
