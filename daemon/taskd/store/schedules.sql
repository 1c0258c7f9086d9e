-- Cron schedules: declared in code or created by clients, fired by the scheduler.
-- Loaded by store/schedules.py (store/queries.py: blocks headed `-- name: NAME`).

-- name: list
SELECT s.id, s.task_id, s.cron, s.timezone, s.payload, s.external_id, s.dedup_key, s.catch_up,
       s.declared, s.active, s.last_fired_at, s.created_at, s.updated_at,
       (SELECT max(r.id::text) FROM taskd.runs r WHERE r.schedule_id = s.id
          AND r.scheduled_for = s.last_fired_at) AS last_run_id
  FROM taskd.schedules s
 WHERE ($1::text IS NULL OR s.task_id = $1) AND ($2::boolean IS NULL OR s.active = $2)
 ORDER BY s.id;

-- name: active
-- What the scheduler reads at every tick: only the columns it uses (no last_run_id lookup).
SELECT id, task_id, cron, timezone, payload, external_id, catch_up, last_fired_at, created_at
  FROM taskd.schedules WHERE active;

-- name: get
SELECT s.id, s.task_id, s.cron, s.timezone, s.payload, s.external_id, s.dedup_key, s.catch_up,
       s.declared, s.active, s.last_fired_at, s.created_at, s.updated_at,
       (SELECT max(r.id::text) FROM taskd.runs r WHERE r.schedule_id = s.id
          AND r.scheduled_for = s.last_fired_at) AS last_run_id
  FROM taskd.schedules s WHERE s.id = $1;

-- name: upsert
-- Create, or (same dedup_key) update in place: creating twice with one key is idempotent.
INSERT INTO taskd.schedules (id, task_id, cron, timezone, payload, external_id, dedup_key,
                             catch_up, declared)
VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7, $8, $9)
ON CONFLICT (dedup_key) DO UPDATE
   SET task_id = excluded.task_id, cron = excluded.cron, timezone = excluded.timezone,
       payload = excluded.payload, external_id = excluded.external_id,
       catch_up = excluded.catch_up, updated_at = now()
RETURNING id;

-- name: declare
-- A schedule declared in code: id = the task id; a changed definition updates it.
INSERT INTO taskd.schedules (id, task_id, cron, timezone, catch_up, declared, active)
VALUES ($1, $1, $2, $3, $4, true, true)
ON CONFLICT (id) DO UPDATE
   SET cron = excluded.cron, timezone = excluded.timezone, catch_up = excluded.catch_up,
       declared = true, active = true, updated_at = now()
 WHERE (taskd.schedules.cron, taskd.schedules.timezone, taskd.schedules.catch_up,
        taskd.schedules.active)
       IS DISTINCT FROM (excluded.cron, excluded.timezone, excluded.catch_up, true);

-- name: retire_declared
-- Declared schedules whose code no longer declares them: tasks registered here without a
-- schedule ($1), or tasks no live worker serves any more ($2: the tasks served).
UPDATE taskd.schedules SET active = false, updated_at = now()
 WHERE declared AND active
   AND (task_id = ANY($1::text[]) OR task_id <> ALL($2::text[]))
RETURNING id;

-- name: update
UPDATE taskd.schedules
   SET cron = coalesce($2, cron), timezone = coalesce($3, timezone),
       payload = CASE WHEN $4::boolean THEN $5::text::jsonb ELSE payload END,
       external_id = CASE WHEN $6::boolean THEN $7 ELSE external_id END,
       catch_up = coalesce($8, catch_up), updated_at = now()
 WHERE id = $1
RETURNING id;

-- name: set_active
UPDATE taskd.schedules SET active = $2, updated_at = now() WHERE id = $1 RETURNING id;

-- name: delete
DELETE FROM taskd.schedules WHERE id = $1 RETURNING id;

-- name: trigger
-- Fire now (migration 0004's taskd.trigger_schedule): a run with the payload of a scheduled
-- fire, marked manual; the schedule's next scheduled fire is unchanged. TD404: no schedule.
WITH fired AS MATERIALIZED (SELECT taskd.trigger_schedule($1) AS id)
SELECT fired.id, s.task_id FROM fired, taskd.schedules s WHERE s.id = $1;

-- name: notify
SELECT pg_notify('taskd_schedules', $1);

-- name: fire
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

-- name: skip_to
-- catch_up = none: missed fire times are passed over without runs.
UPDATE taskd.schedules SET last_fired_at = $2
 WHERE id = $1 AND (last_fired_at IS NULL OR last_fired_at < $2);
