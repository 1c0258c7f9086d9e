-- Schedules: cron definitions, declared in code (@schedules.task) or created through the API.
-- APScheduler's CronTrigger computes fire times in every daemon; the database decides: each
-- (schedule, fire time) inserts at most one run (a unique index), and last_fired_at records
-- how far a schedule has fired, so downtime is caught up by its policy, not forgotten.

CREATE TABLE taskd.schedules (
    id            text PRIMARY KEY,
    task_id       text NOT NULL,
    cron          text NOT NULL,
    timezone      text NOT NULL DEFAULT 'UTC',
    payload       jsonb,                       -- extra data handed to every run it fires
    external_id   text,                        -- the caller's own reference (a user id...)
    dedup_key     text UNIQUE,                 -- creating twice with one key updates, once
    catch_up      text NOT NULL DEFAULT 'latest' CHECK (catch_up IN ('latest', 'all', 'none')),
    declared      boolean NOT NULL DEFAULT false,  -- from code: synced at each daemon start
    active        boolean NOT NULL DEFAULT true,
    last_fired_at timestamptz,                 -- the latest fire time that got its run
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_task_idx ON taskd.schedules (task_id);

ALTER TABLE taskd.runs ADD COLUMN schedule_id text;
ALTER TABLE taskd.runs ADD COLUMN scheduled_for timestamptz;
-- At most one run per (schedule, fire time), with any number of daemons firing.
CREATE UNIQUE INDEX runs_schedule_fire_idx ON taskd.runs (schedule_id, scheduled_for)
    WHERE schedule_id IS NOT NULL;
