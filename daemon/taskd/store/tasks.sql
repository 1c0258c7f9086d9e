-- The tasks the daemons register, and which of them a live worker serves.
-- Loaded by store/tasks.py (store/queries.py: blocks headed `-- name: NAME`).

-- name: sync
INSERT INTO taskd.tasks (id, queue, max_attempts, settings, updated_at)
SELECT * , now() FROM unnest($1::text[], $2::text[], $3::int[], $4::jsonb[])
ON CONFLICT (id) DO UPDATE
   SET queue = excluded.queue, max_attempts = excluded.max_attempts,
       settings = excluded.settings, updated_at = now();

-- name: list
SELECT id, queue, max_attempts, settings, updated_at FROM taskd.tasks ORDER BY id;

-- name: list_served
-- Tasks some live worker serves.
SELECT DISTINCT unnest(tasks) FROM taskd.workers WHERE stopped_at IS NULL;
