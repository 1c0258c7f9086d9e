-- Every state transition is a compare-and-set on (status, worker_id, attempt): a write that
-- matches no row lost a race (the run was rescued or canceled) and is logged, never an error.
-- Loaded by store/runs.py (store/queries.py: blocks headed `-- name: NAME`).

-- name: insert_many
-- Payloads arrive as JSON text: the caller's own connection (connection=...) has no codecs.
-- One statement: insert the batch, then one NOTIFY per distinct queue (not one per row), sent
-- when the surrounding transaction commits. Delayed runs need no wake-up: polling finds them.
WITH task AS (
    SELECT queue FROM taskd.tasks WHERE id = $1
), inserted AS (
    INSERT INTO taskd.runs (id, task_id, queue, payload, priority, run_at, max_attempts, tags,
                            expires_at, concurrency_key, idempotency_key, retry, max_duration)
    SELECT u.id, $1, coalesce($2, (SELECT queue FROM task), 'default'), u.payload::jsonb, $3,
           coalesce($4, now() + make_interval(secs => $5)), $6, $7,
           now() + make_interval(secs => $10), $11, u.key, $13::text::jsonb, $14
      FROM unnest($8::uuid[], $9::text[], $12::text[]) AS u (id, payload, key)
    RETURNING queue, run_at
)
SELECT pg_notify('taskd_wakeup', queue)
  FROM (SELECT DISTINCT queue FROM inserted WHERE run_at <= now()) AS due;

-- name: insert_one
-- insert_many for one run (a single trigger): the same row and NOTIFY from scalars, a third less
-- of the server's CPU than unnesting arrays of one (no function scan, no array to decode).
WITH inserted AS (
    INSERT INTO taskd.runs (id, task_id, queue, payload, priority, run_at, max_attempts, tags,
                            expires_at, concurrency_key, idempotency_key, retry, max_duration)
    VALUES ($8, $1, coalesce($2, (SELECT queue FROM taskd.tasks WHERE id = $1), 'default'),
            $9::text::jsonb, $3, coalesce($4, now() + make_interval(secs => $5)), $6, $7,
            now() + make_interval(secs => $10), $11, $12, $13::text::jsonb, $14)
    RETURNING queue, run_at
)
SELECT pg_notify('taskd_wakeup', queue) FROM inserted WHERE run_at <= now();

-- name: trigger
-- One run through taskd.trigger (the idempotency-key path): its id, or the id of the run that
-- already holds the key.
SELECT taskd.trigger($1, $2::text::jsonb, $3::text::jsonb);

-- name: claim
-- See taskd.claim_runs in the migrations: a function so that its plan is pinned.
-- The last row has no id when the claim held runs back (limits): held_back, retry_in.
-- Each claimed run's own retry and max_duration come from the row the function updated (read
-- back here, with this statement's older snapshot, a run committed meanwhile had none).
SELECT id, task_id, payload, attempt, max_attempts, queue, tags, metadata, log_lines,
       concurrency_key, held_back, retry_in, cursors, run_retry AS retry,
       run_max_duration AS max_duration
  FROM taskd.claim_runs($1::text[], $2::text[], $3::int, $4::uuid, $5::float8, $6::text,
                        $7::text::jsonb, $8::text[], $9::boolean);

-- name: complete_many
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
    -- Driven from the outcomes, each run looked up by its primary key: as a plain join the
    -- planner, told by the statistics that nothing executes, scanned the runs once per
    -- outcome (500 outcomes: 70 ms, growing with the square of the batch). The outcomes in
    -- id order (a sorted subquery is not flattened), so that two batches lock the runs they
    -- share in one order.
    -- (with the attempt it holds: a batch with two outcomes of one run, a superseded attempt
    -- and its successor, writes the outcome of the attempt the run is at, never the other)
    SELECT r.id, o.attempt FROM (SELECT id, attempt FROM outcome ORDER BY id) o
     CROSS JOIN LATERAL (
        SELECT r.id FROM taskd.runs r
         WHERE r.id = o.id AND r.status = 'executing' AND r.worker_id = $1
           AND r.attempt = o.attempt
           FOR NO KEY UPDATE SKIP LOCKED
     ) r
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
      FROM outcome o JOIN locked ON locked.id = o.id AND locked.attempt = o.attempt
     -- by id, not by the ctid the lock returned: a row updated and committed after this
     -- statement's snapshot (a heartbeat, a cancel request) is locked in its newest version,
     -- which the snapshot cannot see; the UPDATE finds the old one and follows it there. Only
     -- by id: `locked` checked the run is this attempt's, executing, on its newest version,
     -- and holds it until the commit; a condition on the run here would let the planner
     -- scan the runs and join the outcomes to each (quadratic), as it did.
     -- (the ids as an array too: each run found through the primary key whatever the
     -- statistics say; on a small table the planner hashed a scan of all of it at every batch)
     WHERE r.id = locked.id AND r.id = ANY (ARRAY(SELECT l.id FROM locked l))
    -- the outcome's own fields come back with the run: the statements below read them here,
    -- not through a join with the outcomes (planned as a nested loop, as the statistics know
    -- nothing of the outcomes, it compared each outcome with each updated run: 250,000 pairs
    -- for a batch of 500)
    RETURNING r.id, o.attempt, r.attempt_started_at, r.queue, r.status, r.parent_id, r.task_id,
              o.status AS asked, o.attempt_outcome, o.error, o.retry_delay, o.owes_hook
), unlocked AS MATERIALIZED (
    -- (materialized: the ownership probe below then runs only for the few outcomes not
    -- locked, usually none, not for the whole batch)
    SELECT o.id, o.attempt FROM outcome o
     WHERE NOT EXISTS (SELECT 1 FROM locked l WHERE l.id = o.id AND l.attempt = o.attempt)
), skipped AS (
    -- (this statement's snapshot: a run held by an open transaction still reads as ours)
    -- (a LATERAL with a LIMIT: each run looked up by its key, only for the outcomes not
    -- locked; as a semi-join the planner scanned the executing runs at every batch)
    SELECT u.id FROM unlocked u
     CROSS JOIN LATERAL (SELECT 1 FROM taskd.runs r
                          WHERE r.id = u.id AND r.status = 'executing' AND r.worker_id = $1
                            AND r.attempt = u.attempt
                          LIMIT 1) AS ours
), recorded AS (
    -- a failure's error group (fingerprint) is computed here, once: failures are the rare path
    INSERT INTO taskd.attempts (run_id, attempt, worker_id, started_at, finished_at, outcome, error,
                                fingerprint)
    SELECT u.id, u.attempt, $1, u.attempt_started_at, now(), u.attempt_outcome, u.error::jsonb,
           CASE WHEN u.attempt_outcome IN ('failed', 'timed_out')
                THEN taskd.error_fingerprint(u.error::jsonb) END
      FROM updated u
     WHERE u.asked <> 'waiting'
), hooked AS (
    -- a failure the executor did not decide (an outcome the database refused, replaced by
    -- this one; an executor defect) has not run the task's on_failure hook: it is owed (see
    -- failure_hooks.claim). An output the executor refused ran the hook already.
    INSERT INTO taskd.failure_hooks (run_id, task_id)
    SELECT u.id, u.task_id
      FROM updated u
     WHERE u.status = 'failed' AND u.asked = 'failed' AND u.owes_hook
    ON CONFLICT DO NOTHING
), notified AS (
    -- a retry due now must nudge the claimers like a new run would; so must a slot freed in a
    -- queue with a concurrency limit (another daemon may start the next run now)
    SELECT pg_notify('taskd_wakeup', q.queue)
      FROM (SELECT u.queue FROM updated u WHERE u.status = 'queued' AND u.retry_delay = 0
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

-- name: rescue
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
    -- attempts used up: the task's on_failure hook is owed (see failure_hooks.claim)
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

-- name: expire
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

-- name: fail_unknown
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

-- name: cancel
SELECT taskd.cancel($1);

-- name: list_cancel_requested
SELECT id FROM taskd.runs
 WHERE id = ANY($1::uuid[]) AND status = 'executing' AND cancel_requested_at IS NOT NULL;

-- name: replay
-- New runs ($2) with the same task, payload (or $3's for every one of them), queue, priority,
-- tags, attempt limit, retry and max_duration as the runs $1 (the same positions); one NOTIFY
-- per queue. The runs created: (id, replayed_from, task_id); a run of $1 missing is left out.
WITH inserted AS (
    INSERT INTO taskd.runs (id, task_id, queue, payload, priority, max_attempts, tags,
                            replayed_from, concurrency_key, retry, max_duration)
    SELECT u.new_id, r.task_id, r.queue, coalesce($3::text::jsonb, r.payload), r.priority,
           r.max_attempts, r.tags, r.id, r.concurrency_key, r.retry, r.max_duration
      FROM unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY AS u (old_id, new_id, n)
      JOIN taskd.runs r ON r.id = u.old_id
     ORDER BY u.n
    RETURNING id, queue, replayed_from, task_id
), notified AS (
    SELECT pg_notify('taskd_wakeup', q.queue) FROM (SELECT DISTINCT queue FROM inserted) AS q
)
SELECT i.id, i.replayed_from, i.task_id FROM inserted i CROSS JOIN (SELECT count(*) FROM notified) AS n;

-- name: cancel_many
-- taskd.cancel for each run still unfinished (see taskd.cancel_many): (id, task_id, status).
SELECT id, task_id, status FROM taskd.cancel_many($1::uuid[]);

-- name: count_unserved
SELECT task_id, count(*) AS queued, min(created_at) AS oldest
  FROM taskd.runs WHERE status = 'queued' AND task_id <> ALL($1::text[])
 GROUP BY task_id ORDER BY task_id;

-- name: release_many
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
RETURNING r.id, r.status, r.parent_id;

-- name: get
-- max_attempts: the run's override, else its task's (as the last daemon registered it).
SELECT r.id, r.task_id, r.queue, r.status, r.payload, r.output, r.error, r.priority, r.run_at,
       r.attempt, coalesce(r.max_attempts, t.max_attempts) AS max_attempts, r.tags,
       r.created_at, r.started_at, r.finished_at, r.worker_id, r.expires_at,
       r.cancel_requested_at, r.replayed_from, r.event_id, r.schedule_id, r.scheduled_for,
       r.metadata, r.parent_id, nullif(r.concurrency_key, '') AS concurrency_key, r.retry,
       r.max_duration, r.version
  FROM taskd.runs r LEFT JOIN taskd.tasks t ON t.id = r.task_id
 WHERE r.id = $1;

-- name: list
-- Newest first (ids are UUIDv7); keyset pagination on id. The store appends one condition
-- per filter given ("AND ..."), then the order and limit: a statement per combination of
-- filters, so that each gets its own plan (runs_task_idx for a task, runs_tags_idx for a
-- tag, the primary key for a created range) instead of one generic plan for all.
SELECT r.id, r.task_id, r.queue, r.status, r.payload, r.output, r.error, r.priority, r.run_at,
       r.attempt, coalesce(r.max_attempts, t.max_attempts) AS max_attempts, r.tags,
       r.created_at, r.started_at, r.finished_at, r.worker_id, r.expires_at,
       r.cancel_requested_at, r.replayed_from, r.event_id, r.schedule_id, r.scheduled_for,
       r.metadata, r.parent_id, nullif(r.concurrency_key, '') AS concurrency_key, r.retry,
       r.max_duration, r.version
  FROM taskd.runs r LEFT JOIN taskd.tasks t ON t.id = r.task_id
 WHERE true

-- name: list_summary
-- The same, without payload and output (the admin API's listing: pages stay small).
SELECT r.id, r.task_id, r.queue, r.status, r.error, r.priority, r.run_at,
       r.attempt, coalesce(r.max_attempts, t.max_attempts) AS max_attempts, r.tags,
       r.created_at, r.started_at, r.finished_at, r.worker_id, r.expires_at,
       r.cancel_requested_at, r.replayed_from, r.event_id, r.schedule_id, r.scheduled_for,
       r.metadata, r.parent_id, nullif(r.concurrency_key, '') AS concurrency_key, r.retry,
       r.max_duration, r.version
  FROM taskd.runs r LEFT JOIN taskd.tasks t ON t.id = r.task_id
 WHERE true

-- name: children
SELECT id, task_id, status FROM taskd.runs WHERE parent_id = $1 ORDER BY id LIMIT $2;

-- name: set_metadata
-- Merge keys into the metadata of a run this worker executes (same compare-and-set as the
-- completion); NULL when the run is no longer this attempt's.
UPDATE taskd.runs SET metadata = coalesce(metadata, '{}') || $4::text::jsonb
 WHERE id = $1 AND status = 'executing' AND worker_id = $2 AND attempt = $3
RETURNING true;

-- name: any_due
-- (burst mode) Whether a queued run of these tasks (in these queues; NULL: every queue) is due
-- and claimable but for the queues' limits: not in a paused queue, not past its ttl, no cancel
-- requested. A scan of runs_claim_idx that stops at the first such run.
SELECT EXISTS (
    SELECT 1 FROM taskd.runs r LEFT JOIN taskd.queues q ON q.name = r.queue
     WHERE r.status = 'queued' AND r.run_at <= now() AND r.task_id = ANY($1::text[])
       AND ($2::text[] IS NULL OR r.queue = ANY($2::text[]))
       AND (r.expires_at IS NULL OR r.expires_at > now() OR r.started_at IS NOT NULL)
       AND r.cancel_requested_at IS NULL
       AND NOT coalesce(q.paused, false)
);

-- name: left_for_later
-- (burst mode, at exit) The runs of these tasks (in these queues; NULL: every queue) a burst
-- leaves: queued and not yet due (delayed, retries), queued and due (held by limits other
-- daemons hold, in a paused queue, or queued after the burst's last look), waiting.
SELECT count(*) FILTER (WHERE r.status = 'queued' AND r.run_at > now()) AS delayed,
       count(*) FILTER (WHERE r.status = 'queued' AND r.run_at <= now()) AS due,
       count(*) FILTER (WHERE r.status = 'waiting') AS waiting
  FROM taskd.runs r
 WHERE r.status IN ('queued', 'waiting') AND r.task_id = ANY($1::text[])
   AND ($2::text[] IS NULL OR r.queue = ANY($2::text[]));

-- name: fail_version_unavailable
-- Queued, due runs pinned to a version (recorded, with durable state: a step or a parent) that
-- no live worker serves, fail once they waited $1 seconds, counted from the later of their
-- run_at and the last stop of a worker that served their version: a deploy's gap between the
-- old daemon's stop and the new one's start fails nothing. Found through
-- runs_versioned_queue_idx (queued runs with a version only). Each failed run's task gets its
-- on_failure hook (failure_hooks) from a daemon that serves it, if one ever does.
WITH serving AS MATERIALIZED (
    SELECT u.task_id, u.version, w.version_policy = 'latest' AS any_version,
           w.stopped_at IS NULL AS live, w.stopped_at
      FROM taskd.workers w
     CROSS JOIN LATERAL unnest(w.tasks, w.task_versions) AS u (task_id, version)
     WHERE w.task_versions IS NOT NULL
), stale AS (
    SELECT r.id, r.version, greatest(r.run_at, v.until) AS since
      FROM taskd.runs r
     CROSS JOIN LATERAL (
        SELECT bool_or(s.live) AS live, max(s.stopped_at) AS until FROM serving s
         WHERE s.task_id = r.task_id AND (s.version = r.version OR s.any_version)) AS v
     WHERE r.status = 'queued' AND r.version IS NOT NULL
       AND r.run_at <= now() - make_interval(secs => $1)
       AND v.live IS NOT TRUE
       AND (v.until IS NULL OR v.until <= now() - make_interval(secs => $1))
       AND (r.parent_id IS NOT NULL
            OR EXISTS (SELECT FROM taskd.steps st WHERE st.run_id = r.id))
     ORDER BY r.run_at
     LIMIT $2
       FOR UPDATE OF r SKIP LOCKED
), failed AS (
    UPDATE taskd.runs r
       SET status = 'failed', finished_at = now(),
           error = jsonb_build_object('type', 'VersionUnavailable',
               'message', format('no live worker serves version %s of task %s (waited %s s)',
                                 r.version, r.task_id,
                                 round(extract(epoch FROM now() - stale.since))))
      FROM stale
     WHERE r.id = stale.id AND r.status = 'queued'
    RETURNING r.id, r.task_id, r.version
), hooked AS (
    INSERT INTO taskd.failure_hooks (run_id, task_id) SELECT id, task_id FROM failed
    ON CONFLICT DO NOTHING
)
SELECT id, task_id, version FROM failed;

-- name: version_unserved
-- (taskd status) Queued runs pinned to a version no live worker serves: how many per task and
-- version, the oldest's creation and since when they are due.
WITH serving AS MATERIALIZED (
    SELECT u.task_id, u.version, w.version_policy = 'latest' AS any_version
      FROM taskd.workers w
     CROSS JOIN LATERAL unnest(w.tasks, w.task_versions) AS u (task_id, version)
     WHERE w.task_versions IS NOT NULL AND w.stopped_at IS NULL
)
SELECT r.task_id, r.version, count(*) AS queued, min(r.created_at) AS oldest,
       min(r.run_at) AS due_since
  FROM taskd.runs r
 WHERE r.status = 'queued' AND r.version IS NOT NULL AND r.run_at <= now()
   AND NOT EXISTS (SELECT FROM serving s
                    WHERE s.task_id = r.task_id AND (s.version = r.version OR s.any_version))
   AND (r.parent_id IS NOT NULL OR EXISTS (SELECT FROM taskd.steps st WHERE st.run_id = r.id))
 GROUP BY r.task_id, r.version
 ORDER BY r.task_id, r.version;
