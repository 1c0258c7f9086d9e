-- taskd's schema, everything in schema taskd (the migrator creates it, and taskd.migrations).
-- This baseline is the squash of the development migrations 0001_initial..0014 (never
-- released): it gives exactly the schema they gave. A database they migrated is adopted as
-- this baseline at start-up (store/migrations.py); each later change is a numbered migration
-- after it. store/schema.sql shows the schema all migrations give, generated from them.
--
-- Run states (the state machine itself is written in code, with the room that moves a run on):
--   queued     waiting to start; includes delayed runs (run_at in the future) and retries.
--   executing  an attempt holds a lease (worker_id, lease_expires_at).
--   waiting    suspended on a timer, child runs or a wait token; run_at is when it next looks.
--   completed, failed, canceled, expired: terminal, written once.
--
-- Sections, by noun: run ids; settings and tasks; workers; queues; runs (with their attempts,
-- steps and log lines); idempotency keys; events; schedules; wait tokens; failure hooks. Each
-- noun's functions follow its tables.


-- Run ids ---------------------------------------------------------------------------------------

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


-- Settings and tasks ----------------------------------------------------------------------------

-- Settings the SQL producers must enforce exactly as the Python client does.
CREATE TABLE taskd.settings (
    key   text PRIMARY KEY,
    value jsonb NOT NULL
);
INSERT INTO taskd.settings (key, value) VALUES ('max_payload_bytes', '1048576');

-- Tasks registered by the daemons (synced at each daemon's start): the enqueue paths read a
-- task's queue from here, and operators see which tasks exist.
CREATE TABLE taskd.tasks (
    id             text PRIMARY KEY,
    queue          text NOT NULL,
    max_attempts   int NOT NULL,
    settings       jsonb NOT NULL DEFAULT '{}',
    updated_at     timestamptz NOT NULL DEFAULT now(),
    -- When a daemon last served the task, as far as pruned worker rows are concerned:
    -- prune_workers folds a deleted worker's stop time in here. A task is served while a worker
    -- row that is not stopped lists it; it became unserved at the latest stop of the rows that
    -- list it, or at this. (Unknown-task timeouts count from when a task became unserved.)
    last_served_at timestamptz
);


-- Workers ---------------------------------------------------------------------------------------

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
    lock_key     bigint NOT NULL,
    -- What the worker's last reconciliation (at its start) or rescue found: counts per kind and
    -- per task, and the first run ids of each kind (bounded; see daemon/taskd/worker/report.py).
    last_report  jsonb,
    -- Which process the worker is (daemon/taskd/worker/process_identity.py): boot id, pid
    -- namespace, pid, start time. A daemon starting on the same machine whose start-up
    -- reconciliation finds a worker's lock free can then prove that the worker's process has
    -- exited and hand back its runs at once (resume after a crash in under a second), instead of
    -- looking at the lock a second time 1.5 s later. NULL: not recorded (another system).
    process      jsonb
);

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


-- Queues ----------------------------------------------------------------------------------------

-- Queues with limits that hold across every daemon on the database: concurrency per queue,
-- concurrency per key within a queue (one run at a time per user), starts per period (rate),
-- pause. And a fair claim: within a queue, the keys with runs ready take turns.
--
-- A queue's settings. Rows are written by the daemons for the queues their tasks declare
-- (declared: the limits in the code) and by operators (taskd queues pause|set|reset). A queue
-- without a row has no limits. Limits set by an operator (overridden) stay until reset,
-- whatever the code declares when daemons restart.
CREATE TABLE taskd.queues (
    name                text PRIMARY KEY CHECK (name <> '' AND length(name) <= 200),
    concurrency         int CHECK (concurrency >= 1),
    concurrency_per_key int CHECK (concurrency_per_key >= 1),
    rate_limit          int CHECK (rate_limit >= 1),
    rate_period         float8 CHECK (rate_period > 0 AND rate_period <= 86400),  -- seconds
    paused              boolean NOT NULL DEFAULT false,
    declared            jsonb NOT NULL DEFAULT '{}',
    overridden          boolean NOT NULL DEFAULT false,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((rate_limit IS NULL) = (rate_period IS NULL))
);

-- Starts in rate-limited queues, one row per claim (n runs at one instant), kept for one
-- period: the claimer counts them under the queue's lock, so that no window of the period's
-- length ever holds more than the limit, across daemons.
CREATE TABLE taskd.queue_starts (
    queue text NOT NULL,
    at    timestamptz NOT NULL,
    n     int NOT NULL
);
CREATE INDEX queue_starts_idx ON taskd.queue_starts (queue, at);


-- Runs ------------------------------------------------------------------------------------------

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
    replayed_from      uuid,                 -- the run this one replays
    event_id           uuid,                 -- the event that created it (taskd.send_event)
    schedule_id        text,                 -- the schedule that fired it ...
    scheduled_for      timestamptz,          -- ... for this fire time
    -- ctx.set_metadata: a JSON object merged by key while the run executes (size-capped by the
    -- daemon), kept after it ends.
    metadata           jsonb,
    -- The run that created this one (child runs); children are found through the index.
    parent_id          uuid,
    idempotency_key    text,                 -- the key it was triggered with, if any
    -- A run's concurrency key ('' = none): runs of one key in one queue share the per-key
    -- limit. Collation "C": keys compare byte-wise, the same order the daemons' round-robin
    -- cursors use.
    concurrency_key    text COLLATE "C" NOT NULL DEFAULT '' CHECK (length(concurrency_key) <= 200),
    -- A run's times stay within what every reader can decode (Python's datetime ends at 9999):
    -- a delay of 10^12 seconds must be refused at enqueue, not break every listing that meets it.
    CONSTRAINT runs_times_in_range
        CHECK (run_at < '9000-01-01' AND (expires_at IS NULL OR expires_at < '9000-01-01'))
) WITH (fillfactor = 80,
        autovacuum_vacuum_scale_factor = 0.02,
        autovacuum_analyze_scale_factor = 0.02,
        autovacuum_vacuum_cost_limit = 2000);

-- A queue name as Queue, the client and `taskd queues pause` accept it (1 to 200 characters;
-- PostgreSQL text holds no NUL): a producer writing SQL cannot put runs in a queue that cannot
-- be paused. NOT VALID, as in the databases adopted from the development migrations, which
-- added it to tables with history: validating would scan all of it under an exclusive lock,
-- and refuse to start if one old finished run had such a name. Finished runs are never
-- updated, so an old name among them breaks nothing; every new or updated row is checked.
ALTER TABLE taskd.runs ADD CONSTRAINT runs_queue_name_length
    CHECK (queue <> '' AND length(queue) <= 200) NOT VALID;

-- The claim's exact shape: only claimable rows, queue by queue and key by key, each in claim
-- order (priority orders runs within a queue and key, as in Sidekiq, Oban and Trigger.dev).
-- Finished runs are not in it, so history never slows a claim.
CREATE INDEX runs_claim_idx ON taskd.runs (queue, concurrency_key, priority DESC, run_at, id)
    WHERE status = 'queued';
-- No index on (worker_id) WHERE status = 'executing': every run a worker ever executed
-- leaves a dead entry in it until vacuum, and the completion's join chose it and rescanned
-- them all on each batch. Completions and lease renewals go by primary key instead.
-- Listing by task (runs list --task, the API) newest first.
CREATE INDEX runs_task_idx ON taskd.runs (task_id, id DESC);
-- The leased runs: the rescuer looks for executing runs whose lease expired, the limited claim
-- counts them per queue and key. lease_expires_at is set exactly while a run is executing (the
-- claim sets it; completion, hand-back and rescue clear it). The predicate is on it rather than
-- on status so that no statement of the hot path (completion, renewal, hand-back: they test
-- status = 'executing') can use this index: it keeps a dead entry for every run that finished,
-- until vacuum.
CREATE INDEX runs_lease_idx ON taskd.runs (queue, concurrency_key, lease_expires_at)
    WHERE lease_expires_at IS NOT NULL;
-- The expirer looks for queued runs past their ttl.
CREATE INDEX runs_expiry_idx ON taskd.runs (expires_at)
    WHERE status = 'queued' AND expires_at IS NOT NULL;
-- Durable waits: a suspended run is WAITING with its wake-up time in run_at. The maintenance
-- loop of every daemon moves the due ones back to the queue through this index.
CREATE INDEX runs_waiting_idx ON taskd.runs (run_at) WHERE status = 'waiting';
CREATE INDEX runs_event_idx ON taskd.runs (event_id) WHERE event_id IS NOT NULL;
-- At most one run per (schedule, fire time), with any number of daemons firing.
CREATE UNIQUE INDEX runs_schedule_fire_idx ON taskd.runs (schedule_id, scheduled_for)
    WHERE schedule_id IS NOT NULL;
CREATE INDEX runs_parent_idx ON taskd.runs (parent_id, id) WHERE parent_id IS NOT NULL;
-- wake_parents (waits.sql) asks, after runs end, whether a waiting parent still has an
-- unfinished child. Through runs_parent_idx that walked all the parent's children past the
-- finished ones (or the planner chose a scan of the whole table): O(n) per batch, O(n^2 / batch)
-- over a fan-out of n children. This index holds only the children not yet finished, so the
-- question costs the few that are left. Its predicate is wake_parents' filter word for word,
-- so the planner can prove it.
-- Write cost: status is already in the predicate of runs_claim_idx, so a change of status is
-- never a HOT update and inserts into the table's indexes anyway; this one takes an entry only
-- for a child run entering an unfinished state (claim, retry, suspension), none for a run
-- without a parent and none when a run finishes.
CREATE INDEX runs_unfinished_children_idx ON taskd.runs (parent_id)
    WHERE parent_id IS NOT NULL AND status NOT IN ('completed', 'failed', 'canceled', 'expired');
-- /api/runs?tag=: most runs carry no tags, and those cost this index nothing.
CREATE INDEX runs_tags_idx ON taskd.runs USING gin (tags) WHERE tags <> '{}';

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

-- Durable steps (ctx.step): a step's result is recorded once per run; when the run executes
-- again (a retry, a resume, a crash) the recorded result is returned without calling the step.
CREATE TABLE taskd.steps (
    run_id      uuid NOT NULL,
    name        text NOT NULL,
    status      text NOT NULL CHECK (status IN ('completed', 'failed')),
    result      jsonb,
    error       jsonb,
    attempts    int NOT NULL,             -- tries of the step's function (its own retry)
    run_attempt int NOT NULL,             -- the run's attempt that recorded it
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    PRIMARY KEY (run_id, name)
);

-- Lines a task logged through ctx.log, written in batches by the daemon that ran it. The id
-- orders lines for tailing; the per-run cap is enforced by the daemon (it learns at claim
-- time how many lines earlier executions of the run stored). Deleted with their run by the
-- pruner.
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

-- taskd.claim_runs: up to max_runs due runs of task_ids, from queues (NULL: every queue with
-- queued runs), queue by queue starting after queue_after, and in each queue key by key
-- (descending) starting below key_after->>queue (round-robin: the caller passes where its
-- last claim ended).
--   * A paused queue gives nothing.
--   * A limited queue (concurrency, per-key concurrency or rate) is claimed under its row's
--     lock, so that what is counted cannot change before this transaction commits: only a
--     claim starts runs. A queue whose row another claimer holds is skipped, not waited for
--     (two claimers taking rows in different orders would deadlock); the caller is told to
--     come back soon.
--   * The free slots are shared among the keys with runs ready: each key gets an equal share
--     (at most its own spare capacity), what a key cannot use goes to the others. One key
--     with 10,000 runs cannot starve the others.
-- Each claimed run comes with its metadata (ctx.metadata) and log_lines: the lines the run
-- stored so far, for the per-run log cap, counted for every run that started before (a resume
-- after a wait, or a drain, gives the attempt back, so the attempt number cannot tell).
-- Besides the claimed runs, one row without an id says what was held back: held_back (a limit
-- or a busy queue kept runs from starting, or keys that had more runs than their share: claim
-- again), retry_in (seconds until a rate window opens or a busy queue is worth trying again;
-- NULL: when a slot frees) and cursors (per queue, the last key examined: where the caller's
-- next claim starts; null: from the top).
CREATE FUNCTION taskd.claim_runs(task_ids text[], queues text[], max_runs int, worker uuid,
                                 lease_seconds float8, queue_after text DEFAULT NULL,
                                 key_after jsonb DEFAULT '{}')
RETURNS TABLE (id uuid, task_id text, payload jsonb, attempt int, max_attempts int,
               queue text, tags text[], metadata jsonb, log_lines bigint,
               concurrency_key text, held_back boolean, retry_in float8, cursors jsonb)
LANGUAGE plpgsql VOLATILE
-- A function so that its plans can be pinned. Right after a burst of enqueues the table has no
-- statistics yet, and the planner would bitmap-scan and sort the whole backlog on every claim;
-- the only plans left here are ordered scans of runs_claim_idx, which stop at the limit
-- whatever the backlog or the history. The picked runs are joined back by primary key one by
-- one (the planner cannot know how many a LIMIT per key gives and would hash-join them
-- against a scan of the whole table); the CTE fences the LIMIT, so no more rows are updated
-- than were picked. Generic plans: each statement is planned once per connection, not at every
-- claim (planning was most of the cost of claiming one run); the settings leave one plan for
-- each.
SET enable_bitmapscan = off SET enable_seqscan = off SET enable_sort = off
SET enable_hashjoin = off SET enable_mergejoin = off SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    remaining  int := max_runs;
    names      text[];
    qname      text;
    q          taskd.queues;
    limited    boolean;
    allowance  int;
    counted    bigint;
    t_start    timestamptz;
    wait_s     float8;
    held       boolean := false;
    cursors    jsonb := '{}';
    probes     int;
    rate_cut   boolean;
    ready      boolean;
    retry      float8;
    running    jsonb;
    settings   jsonb;
    keys       text[];
    spare      int[];
    shares     int[];
    k          text;
    first_key  text;
    wrapped    boolean;
    spare_k    int;
    given      int;
    lvl        int;
    n_claimed  int;
    i          int;
BEGIN
    IF remaining <= 0 THEN
        RETURN;
    END IF;
    -- The queues to look at, in round-robin order (after the one the caller's last claim
    -- ended with), and their settings, in one statement: every statement counts here, a
    -- claim of one run being what a run triggered at idle waits for.
    WITH RECURSIVE found(name) AS (
        -- every queue with queued runs: a loose scan of runs_claim_idx, one probe per queue
        (SELECT r.queue FROM taskd.runs r WHERE r.status = 'queued' AND queues IS NULL
          ORDER BY r.queue LIMIT 1)
        UNION ALL
        SELECT (SELECT r.queue FROM taskd.runs r
                 WHERE r.status = 'queued' AND r.queue > found.name
                 ORDER BY r.queue LIMIT 1)
          FROM found WHERE found.name IS NOT NULL
    ), named AS (
        SELECT found.name FROM found WHERE found.name IS NOT NULL
        UNION
        SELECT u FROM unnest(queues) AS u
    )
    SELECT array_agg(n.name ORDER BY (queue_after IS NOT NULL AND n.name <= queue_after),
                     n.name),
           (SELECT jsonb_object_agg(qq.name, to_jsonb(qq)) FROM taskd.queues qq
             WHERE qq.name IN (SELECT named.name FROM named))
      INTO names, settings
      FROM named n;
    IF names IS NULL THEN
        RETURN;
    END IF;

    FOREACH qname IN ARRAY names LOOP
        EXIT WHEN remaining <= 0;
        IF settings IS NOT NULL AND settings ? qname THEN
            q := jsonb_populate_record(NULL::taskd.queues, settings->qname);
            CONTINUE WHEN q.paused;
            limited := q.concurrency IS NOT NULL OR q.concurrency_per_key IS NOT NULL
                       OR q.rate_limit IS NOT NULL;
        ELSE
            q := NULL;
            limited := false;
        END IF;
        allowance := remaining;
        t_start := now();
        running := '{}';
        rate_cut := false;
        IF limited THEN
            PERFORM FROM taskd.runs r WHERE r.queue = qname AND r.status = 'queued' LIMIT 1;
            CONTINUE WHEN NOT FOUND;
            SELECT * INTO q FROM taskd.queues qq WHERE qq.name = qname FOR UPDATE SKIP LOCKED;
            IF NOT FOUND THEN
                held := true;
                retry := least(coalesce(retry, 0.01), 0.01);
                CONTINUE;
            END IF;
            -- re-read under the lock: an operator may have changed it since
            CONTINUE WHEN q.paused;
            -- each statement below sees every claim committed before the lock was granted
            t_start := clock_timestamp();
            IF q.concurrency IS NOT NULL THEN
                SELECT count(*) INTO counted FROM taskd.runs r
                 WHERE r.queue = qname AND r.lease_expires_at IS NOT NULL;
                allowance := least(allowance, q.concurrency - counted);
            END IF;
            IF q.rate_limit IS NOT NULL THEN
                DELETE FROM taskd.queue_starts s
                 WHERE s.queue = qname
                   AND s.at <= t_start - make_interval(secs => q.rate_period);
                SELECT coalesce(sum(s.n), 0) INTO counted FROM taskd.queue_starts s
                 WHERE s.queue = qname;
                rate_cut := q.rate_limit - counted < allowance;
                IF rate_cut THEN
                    allowance := q.rate_limit - counted;
                    -- when the window's oldest starts leave it, enough to start more
                    SELECT extract(epoch FROM min(s.at) + make_interval(secs => q.rate_period)
                                              - t_start)
                      INTO wait_s FROM taskd.queue_starts s WHERE s.queue = qname;
                    IF wait_s IS NOT NULL THEN
                        held := true;
                        retry := least(coalesce(retry, wait_s), greatest(wait_s, 0.001));
                    END IF;
                END IF;
            END IF;
            IF allowance <= 0 THEN
                held := true;
                CONTINUE;
            END IF;
            IF q.concurrency_per_key IS NOT NULL THEN
                SELECT coalesce(jsonb_object_agg(c.key, c.n), '{}') INTO running
                  FROM (SELECT r.concurrency_key AS key, count(*) AS n FROM taskd.runs r
                         WHERE r.queue = qname AND r.lease_expires_at IS NOT NULL
                           AND r.concurrency_key <> ''
                         GROUP BY r.concurrency_key) AS c;
            END IF;
            -- the attempts start now, after the counts: a slot they found free was released
            -- by an outcome committed before their snapshots, so no run's end is stamped
            -- after the start of the run that took its slot (stamped at the lock, a start
            -- could precede the end of a run whose outcome committed just after)
            t_start := clock_timestamp();
        END IF;

        -- the keys with queued runs, in descending key order after the caller's cursor,
        -- wrapping; each with its spare capacity. Enough keys to give each one run, no more:
        -- the rest take their turn in the next claims. Descending, because each probe then
        -- lands on the end of a key's range, among its newest runs: the front is where the
        -- entries of runs claimed since the last vacuum pile up, dead.
        -- A key counts only with a run to claim now (not only delayed runs, or runs of tasks
        -- this daemon does not serve): otherwise its share would be lost, and the keys after
        -- it never reached. At most 1,000 probes per claim: the cursor goes on from there.
        keys := '{}';
        spare := '{}';
        k := key_after->>qname;
        first_key := k;
        wrapped := k IS NULL;
        probes := 0;
        LOOP
            EXIT WHEN cardinality(keys) >= allowance OR probes >= 1000;
            probes := probes + 1;
            IF k IS NULL THEN
                SELECT r.concurrency_key INTO k FROM taskd.runs r
                 WHERE r.queue = qname AND r.status = 'queued'
                 ORDER BY r.queue DESC, r.concurrency_key DESC LIMIT 1;
            ELSE
                SELECT r.concurrency_key INTO k FROM taskd.runs r
                 WHERE r.queue = qname AND r.status = 'queued' AND r.concurrency_key < k
                 ORDER BY r.queue DESC, r.concurrency_key DESC LIMIT 1;
            END IF;
            IF NOT FOUND THEN
                k := NULL;
                EXIT WHEN wrapped;
                wrapped := true;
                CONTINUE;
            END IF;
            EXIT WHEN wrapped AND first_key IS NOT NULL AND k < first_key;
            cursors := cursors || jsonb_build_object(qname, nullif(k, ''));
            IF k = '' OR q.concurrency_per_key IS NULL OR NOT limited THEN
                spare_k := allowance;
            ELSE
                spare_k := q.concurrency_per_key - coalesce((running->>k)::int, 0);
            END IF;
            IF spare_k > 0 AND k = '' THEN
                keys := keys || k;  -- runs without a key: the pick finds out
                spare := spare || spare_k;
            ELSIF spare_k > 0 THEN
                SELECT true INTO ready FROM taskd.runs r
                 WHERE r.queue = qname AND r.concurrency_key = k
                   AND r.status = 'queued' AND r.run_at <= now()
                   AND r.task_id = ANY(task_ids)
                   AND (r.expires_at IS NULL OR r.expires_at > now() OR r.started_at IS NOT NULL)
                   AND r.cancel_requested_at IS NULL
                 LIMIT 1;
                IF FOUND THEN
                    keys := keys || k;
                    spare := spare || spare_k;
                END IF;
            ELSE
                held := true;
            END IF;
            EXIT WHEN wrapped AND first_key IS NOT NULL AND k = first_key;
            IF k = '' THEN  -- the lowest key: nothing below it, wrap at once
                EXIT WHEN wrapped;
                wrapped := true;
                k := NULL;
            END IF;
        END LOOP;
        CONTINUE WHEN cardinality(keys) = 0;

        -- equal shares, capped by each key's spare capacity (water-filling)
        IF cardinality(keys) = 1 THEN
            shares := ARRAY[least(spare[1], allowance)];
        ELSE
            shares := array_fill(0, ARRAY[cardinality(keys)]);
            given := 0;
            lvl := 0;
            LOOP
                lvl := lvl + 1;
                n_claimed := given;
                FOR i IN 1 .. cardinality(keys) LOOP
                    EXIT WHEN given >= allowance;
                    IF spare[i] >= lvl THEN
                        shares[i] := lvl;
                        given := given + 1;
                    END IF;
                END LOOP;
                -- everything given, or every key at its spare capacity
                EXIT WHEN given >= allowance OR given = n_claimed;
            END LOOP;
        END IF;

        RETURN QUERY
        WITH picked AS (
            SELECT p.id, p.started_at
              FROM unnest(keys, shares) AS s (key, n),
                   LATERAL (SELECT r.id, r.started_at FROM taskd.runs r
                             WHERE r.queue = qname AND r.concurrency_key = s.key
                               AND r.status = 'queued' AND r.run_at <= now()
                               AND r.task_id = ANY(task_ids)
                               AND (r.expires_at IS NULL OR r.expires_at > now()
                                    OR r.started_at IS NOT NULL)
                               AND r.cancel_requested_at IS NULL
                             ORDER BY r.priority DESC, r.run_at, r.id
                             LIMIT s.n
                               FOR UPDATE SKIP LOCKED) AS p
             WHERE s.n > 0
        )
        UPDATE taskd.runs r
           SET status = 'executing', attempt = r.attempt + 1, worker_id = worker,
               lease_expires_at = now() + make_interval(secs => lease_seconds),
               attempt_started_at = t_start, started_at = coalesce(r.started_at, t_start)
          FROM picked
         WHERE r.id = picked.id
        RETURNING r.id, r.task_id, r.payload, r.attempt, r.max_attempts, r.queue, r.tags,
                  r.metadata,
                  CASE WHEN picked.started_at IS NOT NULL
                       THEN (SELECT count(*) FROM taskd.run_logs l WHERE l.run_id = r.id)
                       ELSE 0 END,
                  r.concurrency_key, NULL::boolean, NULL::float8, NULL::jsonb;
        GET DIAGNOSTICS n_claimed = ROW_COUNT;
        remaining := remaining - n_claimed;
        IF limited AND n_claimed > 0 AND q.rate_limit IS NOT NULL THEN
            INSERT INTO taskd.queue_starts (queue, at, n) VALUES (qname, t_start, n_claimed);
        END IF;
        IF limited AND n_claimed >= allowance AND allowance < remaining + n_claimed THEN
            held := true;  -- the limit, not the backlog, ended this queue's share
        END IF;
        IF cardinality(keys) > 1 AND n_claimed > 0 AND n_claimed < allowance THEN
            -- a key had fewer runs than its share; others may have more: claim again now
            held := true;
            retry := 0;
        END IF;
        IF rate_cut AND n_claimed > 0 AND retry IS NULL THEN
            -- this claim opened the window: it closes one period from now
            held := true;
            retry := q.rate_period;
        END IF;
    END LOOP;
    IF held OR cursors <> '{}' THEN
        RETURN QUERY SELECT NULL::uuid, NULL::text, NULL::jsonb, NULL::int, NULL::int,
                            NULL::text, NULL::text[], NULL::jsonb, NULL::bigint, NULL::text,
                            held, retry, cursors;
    END IF;
END
$$;

-- taskd.trigger(task_id, payload, options) -> run id. For producers in any language: inserts
-- in the caller's transaction and notifies the daemons when that transaction commits.
-- options: delay (seconds or an interval such as '10s', '5 minutes'), run_at (timestamptz),
-- priority (int), max_attempts (int), tags (array of strings), queue (text), ttl (seconds or
-- an interval: a run not started within it, counted from now, ends expired), idempotency_key
-- (text) and idempotency_ttl (seconds or an interval; default 24 hours: a second trigger with
-- the key while it lives returns the first run's id and creates nothing), concurrency_key
-- (text: runs of one key in one queue share the queue's per-key limit, and keys take turns
-- when the queue is busy).
CREATE FUNCTION taskd.trigger(task_id text, payload jsonb DEFAULT '{}', options jsonb DEFAULT '{}')
RETURNS uuid LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    run_id   uuid := taskd.new_run_id();
    limit_b  bigint := (SELECT value::text::bigint FROM taskd.settings WHERE key = 'max_payload_bytes');
    size_b   bigint := octet_length(coalesce(payload, 'null'::jsonb)::text);
    unknown  text;
    start_at timestamptz := now();
    q        text;
    idem_key text := options->>'idempotency_key';
    idem_ttl interval := interval '24 hours';
    owned    boolean;
    existing uuid;
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
     WHERE k NOT IN ('delay', 'run_at', 'priority', 'max_attempts', 'tags', 'queue', 'ttl',
                     'idempotency_key', 'idempotency_ttl', 'concurrency_key');
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
    idem_key := options->>'idempotency_key';
    IF idem_key IS NOT NULL THEN
        IF idem_key = '' THEN
            RAISE EXCEPTION 'taskd.trigger: idempotency_key must not be empty'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF options ? 'idempotency_ttl' THEN
            idem_ttl := CASE jsonb_typeof(options->'idempotency_ttl')
                WHEN 'number' THEN make_interval(secs => (options->>'idempotency_ttl')::float8)
                ELSE (options->>'idempotency_ttl')::interval END;
        END IF;
        -- The key's row is the lock: a concurrent trigger with the same key waits here for
        -- this transaction, then finds the key taken. An expired key is taken over.
        INSERT INTO taskd.idempotency_keys AS k (task_id, idempotency_key, run_id, expires_at)
        VALUES (trigger.task_id, idem_key, run_id, now() + idem_ttl)
        ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO UPDATE
           SET run_id = excluded.run_id, expires_at = excluded.expires_at, created_at = now()
         WHERE k.expires_at <= now()
        RETURNING true INTO owned;
        IF owned IS NULL THEN
            -- a statement of its own: its snapshot sees the other transaction's commit
            SELECT k.run_id INTO existing FROM taskd.idempotency_keys k
             WHERE k.task_id = trigger.task_id AND k.idempotency_key = idem_key;
            RETURN existing;
        END IF;
    END IF;
    q := coalesce(options->>'queue', (SELECT t.queue FROM taskd.tasks t WHERE t.id = task_id), 'default');
    INSERT INTO taskd.runs (id, task_id, queue, payload, priority, run_at, max_attempts, tags,
                            expires_at, idempotency_key, concurrency_key)
    VALUES (run_id, task_id, q, coalesce(payload, 'null'::jsonb),
            coalesce((options->>'priority')::int, 0), start_at,
            (options->>'max_attempts')::int,
            coalesce(ARRAY(SELECT jsonb_array_elements_text(options->'tags')), '{}'),
            CASE WHEN options ? 'ttl' THEN now() + CASE jsonb_typeof(options->'ttl')
                WHEN 'number' THEN make_interval(secs => (options->>'ttl')::float8)
                ELSE (options->>'ttl')::interval END END,
            idem_key, coalesce(options->>'concurrency_key', ''));
    PERFORM pg_notify('taskd_wakeup', q);
    RETURN run_id;
END
$$;

-- taskd.cancel(run_id) -> the run's status after the call: 'canceled' for a run that had not
-- started (queued, delayed, waiting), 'executing' for a running one, whose worker is notified
-- and cancels it (it then ends canceled). Cancelling a finished run is an error. Canceling a
-- run cancels its unfinished children (trigger_and_wait), and theirs.
-- SQLSTATE TD404: no such run; TD409: the run has already finished.
CREATE FUNCTION taskd.cancel(run_id uuid) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    current text;
    child   uuid;
    result  text;
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
        result := 'executing';
    ELSE
        UPDATE taskd.runs r
           SET status = 'canceled', finished_at = now(), cancel_requested_at = now(),
               error = jsonb_build_object('type', 'Canceled',
                                          'message', 'canceled while ' || current
                                                     || ', before its next attempt')
         WHERE r.id = run_id;
        result := 'canceled';
    END IF;
    FOR child IN SELECT c.id FROM taskd.runs c
                  WHERE c.parent_id = run_id
                    AND c.status NOT IN ('completed', 'failed', 'canceled', 'expired')
                  ORDER BY c.id LOOP
        PERFORM taskd.cancel(child);
    END LOOP;
    RETURN result;
END
$$;


-- Idempotency keys ------------------------------------------------------------------------------

-- A second trigger of a task with the same key, while the key lives (idempotency_ttl, 24 h by
-- default), returns the first run's id and creates nothing. The primary key of this table
-- enforces it, also under concurrent triggers from any number of connections: no
-- read-then-write.
CREATE TABLE taskd.idempotency_keys (
    task_id         text NOT NULL,
    idempotency_key text NOT NULL,
    run_id          uuid NOT NULL,
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (task_id, idempotency_key)
);
CREATE INDEX idempotency_keys_expiry_idx ON taskd.idempotency_keys (expires_at);


-- Events ----------------------------------------------------------------------------------------

-- A producer records a named event; every task subscribed to the name gets a run, in the
-- producer's transaction. An event nobody subscribes to is recorded all the same.
CREATE TABLE taskd.events (
    id         uuid PRIMARY KEY,
    name       text NOT NULL CHECK (name <> ''),
    payload    jsonb NOT NULL DEFAULT 'null',
    runs       int NOT NULL DEFAULT 0,          -- runs it created
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_name_idx ON taskd.events (name, id DESC);

-- Which tasks an event name starts; each daemon writes its tasks' rows at start.
CREATE TABLE taskd.subscriptions (
    event_name text NOT NULL,
    task_id    text NOT NULL,
    PRIMARY KEY (event_name, task_id)
);

-- taskd.send_event(name, payload) -> the event's id. Inserts the event and one run per
-- subscribed task in the caller's transaction, and wakes the daemons when it commits.
CREATE FUNCTION taskd.send_event(event_name text, event_payload jsonb DEFAULT '{}')
RETURNS uuid LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    new_id  uuid := taskd.new_run_id();
    limit_b bigint := (SELECT value::text::bigint FROM taskd.settings WHERE key = 'max_payload_bytes');
    size_b  bigint := octet_length(coalesce(event_payload, 'null'::jsonb)::text);
    created int;
    q       text;
BEGIN
    IF event_name IS NULL OR btrim(event_name) = '' THEN
        RAISE EXCEPTION 'taskd.send_event: the event name must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF size_b > limit_b THEN
        RAISE EXCEPTION 'taskd.send_event: payload is % bytes, over the limit of % bytes',
            size_b, limit_b USING ERRCODE = 'program_limit_exceeded';
    END IF;
    INSERT INTO taskd.events (id, name, payload)
    VALUES (new_id, event_name, coalesce(event_payload, 'null'::jsonb));
    INSERT INTO taskd.runs (id, task_id, queue, payload, event_id)
    SELECT taskd.new_run_id(), s.task_id, coalesce(t.queue, 'default'),
           coalesce(event_payload, 'null'::jsonb), new_id
      FROM taskd.subscriptions s LEFT JOIN taskd.tasks t ON t.id = s.task_id
     WHERE s.event_name = send_event.event_name
     ORDER BY s.task_id;
    GET DIAGNOSTICS created = ROW_COUNT;
    IF created > 0 THEN
        UPDATE taskd.events SET runs = created WHERE id = new_id;
        FOR q IN SELECT DISTINCT r.queue FROM taskd.runs r WHERE r.event_id = new_id LOOP
            PERFORM pg_notify('taskd_wakeup', q);
        END LOOP;
    END IF;
    RETURN new_id;
END
$$;


-- Schedules -------------------------------------------------------------------------------------

-- Cron definitions, declared in code (@schedules.task) or created through the API.
-- APScheduler's CronTrigger computes fire times in every daemon; the database decides: each
-- (schedule, fire time) inserts at most one run (runs_schedule_fire_idx), and last_fired_at
-- records how far a schedule has fired, so downtime is caught up by its policy, not forgotten.
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


-- Wait tokens -----------------------------------------------------------------------------------

-- A run waits until something outside completes its token (a human approval, a webhook), or
-- the token times out. A completed token wakes only the run waiting on it: wait.for_token
-- marks the token awaited by its run, and only an awaited token's completion queues a waiting
-- run (a run suspended on a timer or on children is left to sleep; it reads the data when it
-- reaches for_token). Tokens are pruned with their runs.
CREATE TABLE taskd.wait_tokens (
    id           uuid PRIMARY KEY,
    run_id       uuid NOT NULL,
    status       text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'completed', 'timed_out')),
    data         jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    completed_at timestamptz,
    -- completed, but its run was not waiting yet (it was still executing): the wake loop
    -- queues the run once it waits. Cleared when the run has seen the data, or once nothing
    -- will read it.
    unseen       boolean NOT NULL DEFAULT false,
    awaited      boolean NOT NULL DEFAULT false  -- its run waits on it (wait.for_token)
);
CREATE INDEX wait_tokens_run_idx ON taskd.wait_tokens (run_id);
CREATE INDEX wait_tokens_unseen_idx ON taskd.wait_tokens (run_id) WHERE unseen;

-- taskd.complete_token(id, data) -> 'completed'. Records the data and queues the run waiting
-- on the token. SQLSTATE TD404: no such token; TD409: already completed, or timed out (its
-- timeout has passed, whether or not its run has seen it yet); program_limit_exceeded: data
-- over the payload limit (taskd.settings max_payload_bytes, as taskd.trigger).
CREATE FUNCTION taskd.complete_token(token_id uuid, token_data jsonb DEFAULT 'null')
RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    token   taskd.wait_tokens%ROWTYPE;
    limit_b bigint := (SELECT value::text::bigint FROM taskd.settings WHERE key = 'max_payload_bytes');
    size_b  bigint := octet_length(coalesce(token_data, 'null'::jsonb)::text);
    q       text;
    live    boolean;
BEGIN
    IF size_b > limit_b THEN
        RAISE EXCEPTION 'taskd.complete_token: token data is % bytes, over the limit of % bytes',
            size_b, limit_b USING ERRCODE = 'program_limit_exceeded';
    END IF;
    SELECT * INTO token FROM taskd.wait_tokens t WHERE t.id = token_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'taskd.complete_token: no token with id %', token_id USING ERRCODE = 'TD404';
    END IF;
    IF token.status <> 'pending' THEN
        RAISE EXCEPTION 'taskd.complete_token: token % is already %', token_id, token.status
            USING ERRCODE = 'TD409';
    END IF;
    -- The moment of the call, not of the caller's transaction start. The token itself is
    -- marked timed_out by its run when it replays (this refusal rolls back with the caller).
    IF token.expires_at <= clock_timestamp() THEN
        RAISE EXCEPTION 'taskd.complete_token: token % is already timed_out (its timeout passed at %)',
            token_id, token.expires_at USING ERRCODE = 'TD409';
    END IF;
    IF token.awaited THEN
        UPDATE taskd.runs r SET status = 'queued', run_at = now()
         WHERE r.id = token.run_id AND r.status = 'waiting'
        RETURNING r.queue INTO q;
    END IF;
    IF q IS NULL THEN
        -- not woken now: its run reads the data when it reaches for_token, or, if it is about
        -- to suspend on this token, the wake loop queues it (unseen). A finished run never will.
        SELECT r.status IN ('queued', 'executing', 'waiting') INTO live
          FROM taskd.runs r WHERE r.id = token.run_id;
    END IF;
    UPDATE taskd.wait_tokens t
       SET status = 'completed', data = coalesce(token_data, 'null'::jsonb),
           completed_at = now(), unseen = coalesce(live, false)
     WHERE t.id = token_id;
    IF q IS NOT NULL THEN
        PERFORM pg_notify('taskd_wakeup', q);
    END IF;
    RETURN 'completed';
END
$$;


-- Failure hooks ---------------------------------------------------------------------------------

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
