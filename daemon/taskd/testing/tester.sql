-- The tester's statements (taskd.testing.tester): a test database's state, and its clock.

-- name: busy
-- Runs executing (claimed, their outcome not yet written) and queued runs of the served tasks
-- that are due and not past their ttl (the claim's own conditions).
SELECT count(*) FILTER (WHERE r.status = 'executing') AS executing,
       count(*) FILTER (
           WHERE r.status = 'queued' AND r.run_at <= now() AND r.task_id = ANY($1::text[])
             AND (r.expires_at IS NULL OR r.expires_at > now() OR r.started_at IS NOT NULL)
       ) AS due
  FROM taskd.runs r
 WHERE r.status IN ('executing', 'queued');

-- name: next_due
-- The earliest time after now when something of the served tasks happens on its own: a queued
-- run falls due (a delay, a retry's backoff), a waiting run's wait ends (a timer, a token's
-- timeout, a parent's recheck), a queued run's ttl passes.
SELECT least(
           min(r.run_at) FILTER (WHERE r.status IN ('queued', 'waiting') AND r.run_at > now()
                                   AND r.task_id = ANY($1::text[])),
           min(r.expires_at) FILTER (WHERE r.status = 'queued' AND r.started_at IS NULL
                                       AND r.expires_at > now())
       )
  FROM taskd.runs r
 WHERE r.status IN ('queued', 'waiting');

-- name: shift_clock
-- The database's clock to $1 ahead of real time; the leases and heartbeat of worker $3
-- follow it by $2, so that the jump makes no run of a live worker look lost.
WITH clock AS (
    UPDATE taskd_clock.skew SET amount = $1::interval RETURNING amount
), leases AS (
    UPDATE taskd.runs r SET lease_expires_at = r.lease_expires_at + $2::interval
     WHERE r.worker_id = $3 AND r.status = 'executing' AND r.lease_expires_at IS NOT NULL
    RETURNING r.id
)
UPDATE taskd.workers w SET heartbeat_at = w.heartbeat_at + $2::interval WHERE w.id = $3;

-- name: reset_clock
UPDATE taskd_clock.skew SET amount = '0';
