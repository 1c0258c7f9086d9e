-- Figures over time for the console's charts (GET /api/stats), written once a minute by one
-- daemon of the fleet (worker/queue_sampler.py) in one statement and kept two days: the minute
-- itself (its row is the turn: the first daemon to insert it writes the minute, the others
-- find it there), the depth of each queue, and the runs started, completed and failed in the
-- minutes before, per task and queue, per task, per queue and in all (read from taskd.runs
-- along its primary key): a day's chart, whatever its filter, then reads 1,440 small rows
-- along the primary key instead of every run of the day.
CREATE TABLE taskd.stats_minutes (
    at timestamptz PRIMARY KEY,
    rolled_up_to timestamptz NOT NULL
);

CREATE TABLE taskd.queue_samples (
    at timestamptz NOT NULL,
    queue text NOT NULL,
    due int NOT NULL,
    delayed int NOT NULL,
    executing int NOT NULL,
    oldest_due_age float8,
    PRIMARY KEY (at, queue)
);

CREATE TABLE taskd.run_minutes (
    at timestamptz NOT NULL,
    task_id text NOT NULL,
    queue text NOT NULL,
    started int NOT NULL,
    completed int NOT NULL,
    failed int NOT NULL,
    waits jsonb NOT NULL,
    PRIMARY KEY (task_id, queue, at)
);
-- what the pruning deletes, oldest first (the primary key serves the reads: one filter each)
CREATE INDEX run_minutes_at_idx ON taskd.run_minutes (at);

COMMENT ON TABLE taskd.stats_minutes IS
    'The minutes sampled for the console''s charts: one row each, inserted by the one daemon '
    'that writes the minute (kept two days).';
COMMENT ON COLUMN taskd.stats_minutes.at IS 'The minute sampled (its start).';
COMMENT ON COLUMN taskd.stats_minutes.rolled_up_to IS
    'taskd.run_minutes holds every minute before this one (written with this minute).';

COMMENT ON TABLE taskd.queue_samples IS
    'Queue depth once a minute (one daemon of the fleet writes each minute), kept two days: '
    'what the console charts.';
COMMENT ON COLUMN taskd.queue_samples.at IS 'The minute sampled (its start).';
COMMENT ON COLUMN taskd.queue_samples.queue IS 'The queue.';
COMMENT ON COLUMN taskd.queue_samples.due IS 'Queued runs due (run_at reached) then.';
COMMENT ON COLUMN taskd.queue_samples.delayed IS 'Queued runs not due yet (delayed, retries).';
COMMENT ON COLUMN taskd.queue_samples.executing IS 'Runs executing (leased) then.';
COMMENT ON COLUMN taskd.queue_samples.oldest_due_age IS
    'Seconds the oldest due run had waited then; NULL when none was due.';

COMMENT ON TABLE taskd.run_minutes IS
    'Runs started, completed and failed per minute, per task and queue, per task, per queue and '
    'in all (minutes with none have no row), written a minute after the minute ends by the '
    'daemon sampling the queues; kept two days.';
COMMENT ON COLUMN taskd.run_minutes.at IS 'The minute (its start).';
COMMENT ON COLUMN taskd.run_minutes.task_id IS 'The task; '''''' (empty): every task.';
COMMENT ON COLUMN taskd.run_minutes.queue IS 'The queue; '''''' (empty): every queue.';
COMMENT ON COLUMN taskd.run_minutes.started IS
    'Runs whose latest attempt started in the minute.';
COMMENT ON COLUMN taskd.run_minutes.completed IS 'Runs that completed in the minute.';
COMMENT ON COLUMN taskd.run_minutes.failed IS 'Runs that failed in the minute.';
COMMENT ON COLUMN taskd.run_minutes.waits IS
    'The started runs'' waits from run_at to start, as a histogram: {"i": count}, i the '
    'width_bucket of the wait in seconds over the bounds 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, '
    '2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400.';
