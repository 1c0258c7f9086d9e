-- The attempts rows of a run (written by runs.complete_many and runs.rescue).
-- Loaded by store/attempts.py (store/queries.py: blocks headed `-- name: NAME`).

-- name: list
SELECT attempt, worker_id, started_at, finished_at, outcome, error
  FROM taskd.attempts WHERE run_id = $1 ORDER BY attempt;
