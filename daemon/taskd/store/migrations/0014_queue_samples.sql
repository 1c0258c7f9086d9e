-- Queue depth over time, for the console's charts (GET /api/stats): one row per queue per
-- minute, written by one daemon of the fleet (worker/queue_sampler.py: the first daemon to
-- look at a minute writes it, the primary key keeps a second one out) and deleted after two
-- days by the same statement. Run counts per minute need no table: they are read from
-- taskd.runs along its primary key (ids are UUIDv7, by creation time).
CREATE TABLE taskd.queue_samples (
    at timestamptz NOT NULL,
    queue text NOT NULL,
    due int NOT NULL,
    delayed int NOT NULL,
    executing int NOT NULL,
    oldest_due_age float8,
    PRIMARY KEY (at, queue)
);

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
