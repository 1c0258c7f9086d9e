-- on_failure hooks owed to failed runs, claimed by the daemons that serve the task.
-- Loaded by store/failure_hooks.py (store/queries.py: blocks headed `-- name: NAME`).

-- name: claim
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

-- name: done
DELETE FROM taskd.failure_hooks WHERE run_id = ANY($1::uuid[]) AND claimed_by = $2;
