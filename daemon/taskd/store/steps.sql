-- A run's steps: ctx.step results, and the ids of its children.
-- Loaded by store/steps.py (store/queries.py: blocks headed `-- name: NAME`).

-- name: list
SELECT name, status, result, error, attempts, run_attempt, started_at, finished_at
  FROM taskd.steps WHERE run_id = $1 ORDER BY started_at, name;

-- name: list_first
-- steps.list, its first $2 rows (NULL: all of them).
SELECT name, status, result, error, attempts, run_attempt, started_at, finished_at
  FROM taskd.steps WHERE run_id = $1 ORDER BY started_at, name LIMIT $2;

-- name: record
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
