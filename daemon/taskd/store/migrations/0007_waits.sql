-- Durable waits: a suspended run is WAITING with its wake-up time in run_at. The maintenance
-- loop of every daemon moves the due ones back to the queue through this index.
CREATE INDEX runs_waiting_idx ON taskd.runs (run_at) WHERE status = 'waiting';
