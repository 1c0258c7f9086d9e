-- Issue 12 (items 5, 7, 9, 11): unknown-task timeouts counted from when a task became
-- unserved, every failure reaching its task's dead-letter hook, each worker's last
-- reconciliation report, and queue names that `taskd queues pause` accepts.

-- When a daemon last served the task, as far as pruned worker rows are concerned: prune_workers
-- folds a deleted worker's stop time in here. A task is served while a worker row that is not
-- stopped lists it; it became unserved at the latest stop of the rows that list it, or at this.
ALTER TABLE taskd.tasks ADD COLUMN last_served_at timestamptz;

-- Whether some live worker serves a task, and until when it was last served (NULL: never, as
-- far as the rows kept say): the latest stop of a worker that listed it, the stops folded into
-- last_served_at, or its last registration (task_sync sets updated_at just before the daemon
-- subscribes it to events and registers its worker row: a task that is being registered is
-- not unserved). One row per task that a worker row lists or taskd.tasks holds.
CREATE VIEW taskd.task_service AS
SELECT s.task_id, bool_or(s.live) AS live, max(s.served_until) AS served_until
  FROM (SELECT unnest(w.tasks) AS task_id, w.stopped_at IS NULL AS live,
               w.stopped_at AS served_until
          FROM taskd.workers w
        UNION ALL
        SELECT t.id, false, greatest(t.last_served_at, t.updated_at) FROM taskd.tasks t) AS s
 GROUP BY s.task_id;

-- What the worker's last reconciliation (at its start) or rescue found: counts per kind and per
-- task, and the first run ids of each kind (bounded; see daemon/taskd/worker/report.py).
ALTER TABLE taskd.workers ADD COLUMN last_report jsonb;

-- Runs failed outside their attempt's code (a rescue with attempts used up, an unknown task,
-- an outcome the database refused) whose task's on_failure hook has not run yet. A daemon that
-- serves the task claims the row, runs the hook, then deletes the row; a row whose claimer is
-- gone (stopped, or declared gone by a rescue) is claimed again: a crash mid-hook reruns it.
CREATE TABLE taskd.failure_hooks (
    run_id     uuid PRIMARY KEY,
    task_id    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    claimed_by uuid,
    claimed_at timestamptz
);

-- A queue name as Queue, the client and `taskd queues pause` accept it (1 to 200 characters;
-- PostgreSQL text holds no NUL): a producer writing SQL can no longer put runs in a queue that
-- cannot be paused. NOT VALID, with the unfinished runs fixed below: validating would scan all
-- of the history under this migration's exclusive lock (every producer and daemon waits), and
-- would refuse to start any daemon if one old finished run had such a name. Finished runs are
-- never updated, so an old name among them breaks nothing; an unfinished run is updated by its
-- claim, which the constraint would refuse: those get a name that fits (truncated; '' becomes
-- 'default'). The constraint first: its lock keeps a producer from adding one meanwhile.
ALTER TABLE taskd.runs ADD CONSTRAINT runs_queue_name_length
    CHECK (queue <> '' AND length(queue) <= 200) NOT VALID;

UPDATE taskd.runs
   SET queue = CASE WHEN queue = '' THEN 'default' ELSE left(queue, 200) END
 WHERE id IN (SELECT id FROM taskd.runs
               WHERE status = 'queued' AND (queue = '' OR length(queue) > 200)
              UNION ALL
              SELECT id FROM taskd.runs
               WHERE status = 'waiting' AND (queue = '' OR length(queue) > 200)
              UNION ALL
              SELECT id FROM taskd.runs
               WHERE lease_expires_at IS NOT NULL AND (queue = '' OR length(queue) > 200));
