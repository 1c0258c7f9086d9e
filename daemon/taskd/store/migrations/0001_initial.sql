-- taskd's first schema: runs, their attempts, the workers that run them, the tasks they know.
-- Run states (documented once, here and in the README):
--   queued     waiting to start; includes delayed runs (run_at in the future) and retries.
--              Left by: the claimer (-> executing).
--   executing  an attempt holds a lease (worker_id, lease_expires_at).
--              Left by: the completer (-> completed | failed | queued for a retry).
--   waiting    suspended on a wait, child runs or a token (later migrations).
--   completed, failed, canceled, expired: terminal, written once.

-- Run ids are UUIDv7 so that they sort by creation. PostgreSQL 18's uuidv7() is monotonic
-- within a session. Older servers get the same layout built here: the millisecond clock,
-- then a 42-bit counter from a sequence (so ids made in one millisecond keep their order),
-- then 32 random bits.
CREATE SEQUENCE taskd.run_id_counter CYCLE MAXVALUE 4398046511103;  -- 2^42 - 1
CREATE FUNCTION taskd.new_run_id() RETURNS uuid LANGUAGE sql VOLATILE AS $$
    WITH parts AS (
        SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms,
               nextval('taskd.run_id_counter') AS counter,
               (random() * 4294967295)::bigint AS noise
    )
    SELECT encode(
               substring(int8send(ms) FROM 3)                                   -- 48-bit ms
            || substring(int4send((28672 | (counter >> 30))::int) FROM 3)      -- ver 7, 12 bits
            || int8send(x'8000000000000000'::bigint                            -- variant 10
                        | ((counter & 1073741823) << 32) | noise),             -- 30 + 32 bits
           'hex')::uuid
      FROM parts
$$;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_proc
                WHERE proname = 'uuidv7' AND pronamespace = 'pg_catalog'::regnamespace) THEN
        EXECUTE 'CREATE OR REPLACE FUNCTION taskd.new_run_id() RETURNS uuid LANGUAGE sql '
                'VOLATILE AS ''SELECT uuidv7()''';
    END IF;
END
$$;

-- Settings the SQL producers must enforce exactly as the Python client does.
CREATE TABLE taskd.settings (
    key   text PRIMARY KEY,
    value jsonb NOT NULL
);
INSERT INTO taskd.settings (key, value) VALUES ('max_payload_bytes', '1048576');

-- Tasks registered by the daemons (synced at each daemon's start): the enqueue paths read a
-- task's queue from here, and operators see which tasks exist.
CREATE TABLE taskd.tasks (
    id           text PRIMARY KEY,
    queue        text NOT NULL,
    max_attempts int NOT NULL,
    settings     jsonb NOT NULL DEFAULT '{}',
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE taskd.workers (
    id           uuid PRIMARY KEY,           -- random per process start, never host/pid alone
    host         text NOT NULL,
    pid          int NOT NULL,
    version      text NOT NULL,
    concurrency  int NOT NULL,
    queues       text[] NOT NULL DEFAULT '{}',
    tasks        text[] NOT NULL DEFAULT '{}',
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at   timestamptz,                -- set on a clean stop, or when found gone
    -- The worker holds pg_advisory_lock(lock_key) on a session of its own for its whole life:
    -- when the lock is free, the worker is provably gone (its process or connection died).
    lock_key     bigint NOT NULL
);

CREATE TABLE taskd.runs (
    id                 uuid PRIMARY KEY DEFAULT taskd.new_run_id(),
    task_id            text NOT NULL CHECK (task_id <> ''),
    queue              text NOT NULL DEFAULT 'default',
    status             text NOT NULL DEFAULT 'queued' CHECK (status IN
                         ('queued', 'executing', 'waiting', 'completed', 'failed', 'canceled', 'expired')),
    payload            jsonb NOT NULL DEFAULT 'null',
    output             jsonb,
    error              jsonb,                -- the last attempt's error (the final one once failed)
    priority           int NOT NULL DEFAULT 0,  -- higher starts first
    run_at             timestamptz NOT NULL DEFAULT now(),
    attempt            int NOT NULL DEFAULT 0,  -- attempts started so far
    max_attempts       int CHECK (max_attempts IS NULL OR max_attempts >= 1),  -- NULL: the task's
    tags               text[] NOT NULL DEFAULT '{}',
    created_at         timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,          -- first attempt's start
    attempt_started_at timestamptz,          -- current attempt's start
    finished_at        timestamptz,
    worker_id          uuid,                 -- lease owner while executing
    lease_expires_at   timestamptz,
    expires_at         timestamptz,          -- ttl: a run not started by then ends expired
    cancel_requested_at timestamptz,         -- set by taskd.cancel on an executing run
    replayed_from      uuid                  -- the run this one replays
) WITH (fillfactor = 80,
        autovacuum_vacuum_scale_factor = 0.02,
        autovacuum_analyze_scale_factor = 0.02,
        autovacuum_vacuum_cost_limit = 2000);

-- The claim query's exact shape: only claimable rows, in claim order. Finished runs are not
-- in it, so history never slows a claim.
CREATE INDEX runs_claim_idx ON taskd.runs (priority DESC, run_at, id) WHERE status = 'queued';
-- No index on (worker_id) WHERE status = 'executing': every run a worker ever executed
-- leaves a dead entry in it until vacuum, and the completion's join chose it and rescanned
-- them all on each batch. Completions and lease renewals go by primary key instead.
-- Listing by task (runs list --task, the API) newest first.
CREATE INDEX runs_task_idx ON taskd.runs (task_id, id DESC);
-- The rescuer looks for executing runs whose lease expired. lease_expires_at is set exactly
-- while a run is executing (the claim sets it; completion, hand-back and rescue clear it).
-- The predicate is on it rather than on status so that no statement of the hot path
-- (completion, renewal, hand-back: they test status = 'executing') can use this index: it
-- keeps a dead entry for every run that finished, until vacuum.
CREATE INDEX runs_lease_idx ON taskd.runs (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
-- The expirer looks for queued runs past their ttl.
CREATE INDEX runs_expiry_idx ON taskd.runs (expires_at)
    WHERE status = 'queued' AND expires_at IS NOT NULL;

CREATE TABLE taskd.attempts (
    -- No foreign key: its check cost a third of each completion batch. Attempt rows are only
    -- written by the completer under the run's compare-and-set, and deleted with their run.
    run_id      uuid NOT NULL,
    attempt     int NOT NULL,
    worker_id   uuid,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('completed', 'failed', 'timed_out', 'canceled', 'lost')),
    error       jsonb,
    PRIMARY KEY (run_id, attempt)
);

-- taskd.claim_runs: the claim, as a function so that its plan can be pinned. Right after a
-- burst of enqueues the table has no statistics yet, and the planner would bitmap-scan and
-- sort the whole backlog on every claim; the only plan left here is the ordered scan of
-- runs_claim_idx, which stops after max_runs rows whatever the backlog or the history.
-- The CTE fences the LIMIT: the planner cannot update more rows than were picked.
-- queues: NULL claims from every queue.
CREATE FUNCTION taskd.claim_runs(task_ids text[], queues text[], max_runs int, worker uuid,
                                 lease_seconds float8)
RETURNS TABLE (id uuid, task_id text, payload jsonb, attempt int, max_attempts int,
               queue text, tags text[])
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
    RETURNING r.id, r.task_id, r.payload, r.attempt, r.max_attempts, r.queue, r.tags
$$;

-- taskd.trigger(task_id, payload, options) -> run id. For producers in any language: inserts
-- in the caller's transaction and notifies the daemons when that transaction commits.
-- options: delay (seconds or an interval such as '10s', '5 minutes'), run_at (timestamptz),
-- priority (int), max_attempts (int), tags (array of strings), queue (text), ttl (seconds or
-- an interval: a run not started within it, counted from now, ends expired).
CREATE FUNCTION taskd.trigger(task_id text, payload jsonb DEFAULT '{}', options jsonb DEFAULT '{}')
RETURNS uuid LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    run_id   uuid := taskd.new_run_id();
    limit_b  bigint := (SELECT value::text::bigint FROM taskd.settings WHERE key = 'max_payload_bytes');
    size_b   bigint := octet_length(coalesce(payload, 'null'::jsonb)::text);
    unknown  text;
    start_at timestamptz := now();
    q        text;
BEGIN
    IF task_id IS NULL OR task_id = '' THEN
        RAISE EXCEPTION 'taskd.trigger: task_id must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF size_b > limit_b THEN
        RAISE EXCEPTION 'taskd.trigger: payload is % bytes, over the limit of % bytes', size_b, limit_b
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    options := coalesce(options, '{}');
    IF jsonb_typeof(options) <> 'object' THEN
        RAISE EXCEPTION 'taskd.trigger: options must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT string_agg(k, ', ') INTO unknown FROM jsonb_object_keys(options) AS k
     WHERE k NOT IN ('delay', 'run_at', 'priority', 'max_attempts', 'tags', 'queue', 'ttl');
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'taskd.trigger: unknown option(s): %', unknown USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF options ? 'run_at' THEN
        start_at := (options->>'run_at')::timestamptz;
    ELSIF options ? 'delay' THEN
        start_at := now() + CASE jsonb_typeof(options->'delay')
            WHEN 'number' THEN make_interval(secs => (options->>'delay')::float8)
            ELSE (options->>'delay')::interval END;
    END IF;
    q := coalesce(options->>'queue', (SELECT t.queue FROM taskd.tasks t WHERE t.id = task_id), 'default');
    INSERT INTO taskd.runs (id, task_id, queue, payload, priority, run_at, max_attempts, tags,
                            expires_at)
    VALUES (run_id, task_id, q, coalesce(payload, 'null'::jsonb),
            coalesce((options->>'priority')::int, 0), start_at,
            (options->>'max_attempts')::int,
            coalesce(ARRAY(SELECT jsonb_array_elements_text(options->'tags')), '{}'),
            CASE WHEN options ? 'ttl' THEN now() + CASE jsonb_typeof(options->'ttl')
                WHEN 'number' THEN make_interval(secs => (options->>'ttl')::float8)
                ELSE (options->>'ttl')::interval END END);
    PERFORM pg_notify('taskd_wakeup', q);
    RETURN run_id;
END
$$;

-- taskd.cancel(run_id) -> the run's status after the call: 'canceled' for a run that had not
-- started (queued, delayed, waiting), 'executing' for a running one, whose worker is notified
-- and cancels it (it then ends canceled). Cancelling a finished run is an error.
-- SQLSTATE TD404: no such run; TD409: the run has already finished.
CREATE FUNCTION taskd.cancel(run_id uuid) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    current text;
BEGIN
    SELECT r.status INTO current FROM taskd.runs r WHERE r.id = run_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'taskd.cancel: no run with id %', run_id USING ERRCODE = 'TD404';
    END IF;
    IF current IN ('completed', 'failed', 'canceled', 'expired') THEN
        RAISE EXCEPTION 'taskd.cancel: run % has already finished (%)', run_id, current
            USING ERRCODE = 'TD409';
    END IF;
    IF current = 'executing' THEN
        UPDATE taskd.runs r SET cancel_requested_at = coalesce(r.cancel_requested_at, now())
         WHERE r.id = run_id;
        PERFORM pg_notify('taskd_cancel', run_id::text);
        RETURN 'executing';
    END IF;
    UPDATE taskd.runs r
       SET status = 'canceled', finished_at = now(), cancel_requested_at = now(),
           error = jsonb_build_object('type', 'Canceled',
                                      'message', 'canceled while queued, before its next attempt')
     WHERE r.id = run_id;
    RETURN 'canceled';
END
$$;
