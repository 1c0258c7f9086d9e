-- What operators and product UIs read while runs execute: metadata, stored log lines, links
-- between runs; and the indexes the admin API's filters need.

-- ctx.set_metadata: a JSON object merged by key while the run executes (size-capped by the
-- daemon), kept after it ends.
ALTER TABLE taskd.runs ADD COLUMN metadata jsonb;
-- The run that created this one (child runs); children are found through the index.
ALTER TABLE taskd.runs ADD COLUMN parent_id uuid;
CREATE INDEX runs_parent_idx ON taskd.runs (parent_id, id) WHERE parent_id IS NOT NULL;
-- /api/runs?tag=: most runs carry no tags, and those cost this index nothing.
CREATE INDEX runs_tags_idx ON taskd.runs USING gin (tags) WHERE tags <> '{}';

-- Lines a task logged through ctx.log, written in batches by the daemon that ran it. The id
-- orders lines for tailing; the per-run cap is enforced by the daemon (it learns at claim
-- time how many lines earlier attempts stored). Deleted with their run by the pruner.
CREATE TABLE taskd.run_logs (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id  uuid NOT NULL,
    task_id text NOT NULL,
    attempt int NOT NULL,
    at      timestamptz NOT NULL,
    level   text NOT NULL CHECK (level IN ('debug', 'info', 'warning', 'error')),
    message text NOT NULL,
    fields  jsonb
);
CREATE INDEX run_logs_run_idx ON taskd.run_logs (run_id, id);

-- The claim now also returns the run's metadata (ctx.metadata) and, on a later attempt, how
-- many log lines earlier attempts stored (the cap is per run). Same pinned plan as before.
DROP FUNCTION taskd.claim_runs(text[], text[], int, uuid, float8);
CREATE FUNCTION taskd.claim_runs(task_ids text[], queues text[], max_runs int, worker uuid,
                                 lease_seconds float8)
RETURNS TABLE (id uuid, task_id text, payload jsonb, attempt int, max_attempts int,
               queue text, tags text[], metadata jsonb, log_lines bigint)
LANGUAGE sql VOLATILE
SET enable_bitmapscan = off SET enable_seqscan = off SET enable_sort = off
AS $$
    WITH picked AS (
        SELECT r.id FROM taskd.runs r
         WHERE r.status = 'queued' AND r.run_at <= now() AND r.task_id = ANY(task_ids)
           AND (queues IS NULL OR r.queue = ANY(queues))
           AND (r.expires_at IS NULL OR r.expires_at > now() OR r.started_at IS NOT NULL)
           AND r.cancel_requested_at IS NULL
         ORDER BY r.priority DESC, r.run_at, r.id
         LIMIT max_runs
           FOR UPDATE SKIP LOCKED
    )
    UPDATE taskd.runs r
       SET status = 'executing', attempt = r.attempt + 1, worker_id = worker,
           lease_expires_at = now() + make_interval(secs => lease_seconds),
           attempt_started_at = now(), started_at = coalesce(r.started_at, now())
      FROM picked
     WHERE r.id = picked.id
    RETURNING r.id, r.task_id, r.payload, r.attempt, r.max_attempts, r.queue, r.tags,
              r.metadata,
              CASE WHEN r.attempt > 1
                   THEN (SELECT count(*) FROM taskd.run_logs l WHERE l.run_id = r.id)
                   ELSE 0 END
$$;

-- A run's times stay within what every reader can decode (Python's datetime ends at 9999): a
-- delay of 10^12 seconds must be refused at enqueue, not break every listing that meets it.
ALTER TABLE taskd.runs ADD CONSTRAINT runs_times_in_range
    CHECK (run_at < '9000-01-01' AND (expires_at IS NULL OR expires_at < '9000-01-01'));
