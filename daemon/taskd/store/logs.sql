-- The lines runs log with ctx.log, and what `taskd logs` reads.
-- Loaded by store/logs.py (store/queries.py: blocks headed `-- name: NAME`).

-- name: insert_many
-- One batch of ctx.log lines, then one NOTIFY for every tail (`taskd logs -f`) to read them.
WITH inserted AS (
    INSERT INTO taskd.run_logs (run_id, task_id, attempt, at, level, message, fields)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::timestamptz[], $5::text[],
                         $6::text[], $7::text[]::jsonb[])
    RETURNING id
)
SELECT pg_notify('taskd_logs', max(id)::text) FROM inserted;

-- name: list
-- Lines after a cursor, oldest first; filters are optional ($2 run, $3 task, $4 levels).
SELECT l.id, l.run_id, l.task_id, l.attempt, l.at, l.level, l.message, l.fields
  FROM taskd.run_logs l
 WHERE l.id > $1
   AND ($2::uuid IS NULL OR l.run_id = $2)
   AND ($3::text IS NULL OR l.task_id = $3)
   AND ($4::text[] IS NULL OR l.level = ANY($4))
 ORDER BY l.id
 LIMIT $5;

-- name: recent
-- The newest lines (newest first; the caller reverses them).
SELECT l.id, l.run_id, l.task_id, l.attempt, l.at, l.level, l.message, l.fields
  FROM taskd.run_logs l
 WHERE ($1::uuid IS NULL OR l.run_id = $1)
   AND ($2::text IS NULL OR l.task_id = $2)
   AND ($3::text[] IS NULL OR l.level = ANY($3))
 ORDER BY l.id DESC
 LIMIT $4;

-- name: of_run
-- One run's lines, oldest first (the index on (run_id, id)).
SELECT l.id, l.run_id, l.task_id, l.attempt, l.at, l.level, l.message, l.fields
  FROM taskd.run_logs l
 WHERE l.run_id = $1 AND l.id > $2
 ORDER BY l.id
 LIMIT $3;
