-- Queues with limits that hold across every daemon on the database: concurrency per queue,
-- concurrency per key within a queue (one run at a time per user), starts per period (rate),
-- pause. And a fair claim: within a queue, the keys with runs ready take turns.

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

-- A run's concurrency key ('' = none): runs of one key in one queue share the per-key limit.
-- Collation "C": keys compare byte-wise, the same order the daemons' round-robin cursors use.
ALTER TABLE taskd.runs ADD COLUMN concurrency_key text COLLATE "C" NOT NULL DEFAULT ''
    CHECK (length(concurrency_key) <= 200);

-- The claim now goes queue by queue and key by key, each in claim order. Priority orders runs
-- within a queue (and key), as in Sidekiq, Oban and Trigger.dev.
DROP INDEX taskd.runs_claim_idx;
CREATE INDEX runs_claim_idx ON taskd.runs (queue, concurrency_key, priority DESC, run_at, id)
    WHERE status = 'queued';
-- Executing runs are the leased ones: counted per queue and key by the limited claim. Same
-- predicate as before (see 0001), so the hot path's statements still cannot pick it.
DROP INDEX taskd.runs_lease_idx;
CREATE INDEX runs_lease_idx ON taskd.runs (queue, concurrency_key, lease_expires_at)
    WHERE lease_expires_at IS NOT NULL;

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
-- Besides the claimed runs, one row without an id says what was held back: held_back (a limit
-- or a busy queue kept runs from starting, or keys that had more runs than their share: claim
-- again), retry_in (seconds until a rate window opens or a busy queue is worth trying again;
-- NULL: when a slot frees) and cursors (per queue, the last key examined: where the caller's
-- next claim starts; null: from the top).
DROP FUNCTION taskd.claim_runs(text[], text[], int, uuid, float8);
CREATE FUNCTION taskd.claim_runs(task_ids text[], queues text[], max_runs int, worker uuid,
                                 lease_seconds float8, queue_after text DEFAULT NULL,
                                 key_after jsonb DEFAULT '{}')
RETURNS TABLE (id uuid, task_id text, payload jsonb, attempt int, max_attempts int,
               queue text, tags text[], metadata jsonb, log_lines bigint,
               concurrency_key text, held_back boolean, retry_in float8, cursors jsonb)
LANGUAGE plpgsql VOLATILE
-- Pinned plans, as before (0001), plus: the picked runs are joined back by primary key one by
-- one (the planner cannot know how many a LIMIT per key gives and would hash-join them
-- against a scan of the whole table). Generic plans: each statement is planned once per
-- connection, not at every claim (planning was most of the cost of claiming one run); the
-- settings above leave one plan for each.
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
            SELECT p.id
              FROM unnest(keys, shares) AS s (key, n),
                   LATERAL (SELECT r.id FROM taskd.runs r
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
                  CASE WHEN r.attempt > 1
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

-- taskd.trigger gains the option concurrency_key (text): runs of one key in one queue share
-- the queue's per-key limit, and keys take turns when the queue is busy.
CREATE OR REPLACE FUNCTION taskd.trigger(task_id text, payload jsonb DEFAULT '{}', options jsonb DEFAULT '{}')
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
