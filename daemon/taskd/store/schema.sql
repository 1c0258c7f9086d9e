-- taskd's schema: what applying every migration in store/migrations/ to an empty database
-- gives, as pg_dump --schema-only prints it from PostgreSQL 18.
-- Generated: do not edit.
-- Change the schema with a new numbered migration, then regenerate this file with
--     .venv/bin/python -m taskd.store.schema_dump
-- The why of each table, index and function is in the migration that made it.

--
-- Name: taskd; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA taskd;

--
-- Name: cancel(uuid); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.cancel(run_id uuid) RETURNS text
    LANGUAGE plpgsql
    AS $$
DECLARE
    result text := taskd.cancel_without_wake(run_id);
    q      text;
BEGIN
    IF result = 'canceled' THEN
        UPDATE taskd.runs p SET status = 'queued', run_at = now()
         WHERE p.id = (SELECT w.id FROM taskd.runs w
                        WHERE w.id = (SELECT c.parent_id FROM taskd.runs c WHERE c.id = run_id)
                          AND w.status = 'waiting'
                          -- the unfinished children only (runs_unfinished_children_idx)
                          AND NOT EXISTS (SELECT 1 FROM taskd.runs s
                                           WHERE s.parent_id = w.id
                                             AND s.status NOT IN ('completed', 'failed',
                                                                  'canceled', 'expired')
                                          OFFSET 0)
                          FOR NO KEY UPDATE SKIP LOCKED)
           AND p.status = 'waiting'
        RETURNING p.queue INTO q;
        IF q IS NOT NULL THEN
            PERFORM pg_notify('taskd_wakeup', q);
        END IF;
    END IF;
    RETURN result;
END
$$;

--
-- Name: FUNCTION cancel(run_id uuid); Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON FUNCTION taskd.cancel(run_id uuid) IS 'Cancel a run; returns its status after the call: ''canceled'' for a run that had not started (queued, delayed, waiting), ''executing'' for a running one, whose daemon is notified and cancels it (it then ends canceled, after its on_cancel hook). Its unfinished child runs are canceled too. SQLSTATE TD404: no such run; TD409: the run has already finished.';

--
-- Name: cancel_many(uuid[]); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.cancel_many(run_ids uuid[]) RETURNS TABLE(id uuid, task_id text, status text)
    LANGUAGE plpgsql
    AS $$
-- taskd.cancel for each run of the batch that is still unfinished when its row is locked (in
-- id order); the others (finished meanwhile, deleted, or canceled as a child of an earlier run
-- of the batch) are left out of the result.
DECLARE
    one     uuid;
    current text;
    task    text;
BEGIN
    FOR one IN SELECT u FROM unnest(run_ids) AS u ORDER BY u LOOP
        SELECT r.status, r.task_id INTO current, task FROM taskd.runs r WHERE r.id = one
           FOR UPDATE;
        IF FOUND AND current NOT IN ('completed', 'failed', 'canceled', 'expired') THEN
            id := one;
            task_id := task;
            status := taskd.cancel(one);
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;

--
-- Name: FUNCTION cancel_many(run_ids uuid[]); Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON FUNCTION taskd.cancel_many(run_ids uuid[]) IS 'taskd.cancel for each of these runs still unfinished (one transaction): (id, task_id, status after the call) of each; finished or missing runs are skipped, not an error.';

--
-- Name: cancel_without_wake(uuid); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.cancel_without_wake(run_id uuid) RETURNS text
    LANGUAGE plpgsql
    AS $$
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

--
-- Name: FUNCTION cancel_without_wake(run_id uuid); Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON FUNCTION taskd.cancel_without_wake(run_id uuid) IS 'The state change of taskd.cancel, without waking the parent: call taskd.cancel.';

--
-- Name: check_schedule(text, text, text, text); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.check_schedule(cron text, timezone text, catch_up text, caller text) RETURNS void
    LANGUAGE plpgsql STABLE
    AS $_$
DECLARE
    fields   text[];
    names    text[] := ARRAY['second', 'minute', 'hour', 'day', 'month', 'weekday'];
    lows     int[]  := ARRAY[0, 0, 0, 1, 1, 0];
    highs    int[]  := ARRAY[59, 59, 23, 31, 12, 7];
    offset_i int;
    i        int;
    item     text;
    parts    text[];
    low      int;
    high     int;
    field    text;
BEGIN
    IF cron IS NULL OR btrim(cron) = '' THEN
        RAISE EXCEPTION '%: cron must not be empty', caller USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF timezone IS NULL OR NOT EXISTS (SELECT 1 FROM pg_timezone_names z WHERE z.name = timezone) THEN
        RAISE EXCEPTION '%: unknown timezone % (use an IANA name: Europe/Paris)', caller,
            coalesce(quote_literal(timezone), 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF catch_up IS NULL OR catch_up NOT IN ('latest', 'all', 'none') THEN
        RAISE EXCEPTION '%: catch_up must be one of latest, all, none, not %', caller,
            coalesce(quote_literal(catch_up), 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF lower(btrim(cron)) IN ('@yearly', '@annually', '@monthly', '@weekly', '@daily',
                              '@midnight', '@hourly') THEN
        RETURN;
    END IF;
    fields := regexp_split_to_array(btrim(cron), '\s+');
    IF array_length(fields, 1) = 5 THEN
        offset_i := 1;  -- no seconds field
    ELSIF array_length(fields, 1) = 6 THEN
        offset_i := 0;
    ELSE
        RAISE EXCEPTION '%: cron % needs 5 fields (minute hour day month weekday), 6 (seconds '
            'first), or a shorthand such as @daily', caller, quote_literal(cron)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 1 .. array_length(fields, 1) LOOP
        field := names[i + offset_i];
        FOREACH item IN ARRAY string_to_array(lower(fields[i]), ',') LOOP
            IF item = '*' OR item ~ '^\*/[0-9]+$' THEN
                parts := ARRAY[NULL, NULL, substring(item FROM '^\*/([0-9]+)$')];
            ELSIF item ~ '^[0-9]+(-[0-9]+)?(/[0-9]+)?$' THEN
                parts := regexp_match(item, '^([0-9]+)(?:-([0-9]+))?(?:/([0-9]+))?$');
            ELSIF field = 'day' AND item = 'last' THEN
                CONTINUE;
            ELSIF field = 'month'
                  AND item ~ '^(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)(-(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec))?$' THEN
                CONTINUE;
            ELSIF field = 'weekday'
                  AND item ~ '^(mon|tue|wed|thu|fri|sat|sun)(-(mon|tue|wed|thu|fri|sat|sun))?$' THEN
                CONTINUE;
            ELSE
                RAISE EXCEPTION '%: cron %: the % field % is not a cron expression', caller,
                    quote_literal(cron), field, quote_literal(fields[i])
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF parts[1] IS NOT NULL THEN
                low := parts[1]::int;
                high := coalesce(parts[2]::int, low);
                IF low < lows[i + offset_i] OR high > highs[i + offset_i] THEN
                    RAISE EXCEPTION '%: cron %: the % field % is out of range %-%', caller,
                        quote_literal(cron), field, quote_literal(fields[i]), lows[i + offset_i],
                        highs[i + offset_i] USING ERRCODE = 'invalid_parameter_value';
                END IF;
                IF high < low THEN
                    RAISE EXCEPTION '%: cron %: the % field % has a range that ends before it '
                        'starts', caller, quote_literal(cron), field, quote_literal(fields[i])
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
            END IF;
            IF parts[3] IS NOT NULL AND parts[3]::int = 0 THEN
                RAISE EXCEPTION '%: cron %: the % field % has a step of 0', caller,
                    quote_literal(cron), field, quote_literal(fields[i])
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        END LOOP;
    END LOOP;
END
$_$;

--
-- Name: FUNCTION check_schedule(cron text, timezone text, catch_up text, caller text); Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON FUNCTION taskd.check_schedule(cron text, timezone text, catch_up text, caller text) IS 'The checks of taskd.create_schedule and taskd.update_schedule: call those.';

--
-- Name: check_schedule_payload(jsonb, text); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.check_schedule_payload(payload jsonb, caller text) RETURNS void
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
    limit_b bigint := (SELECT value::text::bigint FROM taskd.settings WHERE key = 'max_payload_bytes');
    size_b  bigint := octet_length(coalesce(payload, 'null'::jsonb)::text);
BEGIN
    IF size_b > limit_b THEN
        RAISE EXCEPTION '%: payload is % bytes, over the limit of % bytes', caller, size_b, limit_b
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
END
$$;

--
-- Name: FUNCTION check_schedule_payload(payload jsonb, caller text); Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON FUNCTION taskd.check_schedule_payload(payload jsonb, caller text) IS 'The payload limit of taskd.create_schedule and taskd.update_schedule.';

--
-- Name: claim_runs(text[], text[], integer, uuid, double precision, text, jsonb, text[], boolean); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.claim_runs(task_ids text[], queues text[], max_runs integer, worker uuid, lease_seconds double precision, queue_after text DEFAULT NULL::text, key_after jsonb DEFAULT '{}'::jsonb, task_versions text[] DEFAULT NULL::text[], pinned boolean DEFAULT true) RETURNS TABLE(id uuid, task_id text, payload jsonb, attempt integer, max_attempts integer, queue text, tags text[], metadata jsonb, log_lines bigint, concurrency_key text, held_back boolean, retry_in double precision, cursors jsonb, run_retry jsonb, run_max_duration double precision)
    LANGUAGE plpgsql
    SET enable_bitmapscan TO 'off'
    SET enable_seqscan TO 'off'
    SET enable_sort TO 'off'
    SET enable_hashjoin TO 'off'
    SET enable_mergejoin TO 'off'
    SET plan_cache_mode TO 'force_generic_plan'
    SET jit TO 'off'
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
    one_key    boolean;
BEGIN
    IF remaining <= 0 THEN
        RETURN;
    END IF;
    -- The common case first: one queue and one key hold every queued run (a daemon idle when
    -- a run arrives, one queue draining), that queue unlimited and not paused. The loop below
    -- would claim from that key alone; here one statement finds it out and one claims. Each
    -- statement and expression of this function is set up again in every call's transaction:
    -- the loop's probes were a third of the time a run triggered at idle waited for its claim
    -- in the server. The result is the loop's: the same runs in the same order, no limit
    -- held anything back, and the trailing row with the key as the queue's cursor
    -- (tests/store/test_claim_one_key.py compares the two on every kind of run).
    SELECT lo.queue, lo.concurrency_key,
           hi.queue = lo.queue AND hi.concurrency_key = lo.concurrency_key
           AND (queues IS NULL OR lo.queue = ANY(queues))
           AND NOT EXISTS (SELECT FROM taskd.queues qq
                            WHERE qq.name = lo.queue
                              AND (qq.paused OR qq.concurrency IS NOT NULL
                                   OR qq.concurrency_per_key IS NOT NULL
                                   OR qq.rate_limit IS NOT NULL))
      INTO qname, k, one_key
      FROM (SELECT r.queue, r.concurrency_key FROM taskd.runs r WHERE r.status = 'queued'
             ORDER BY r.queue, r.concurrency_key LIMIT 1) AS lo,
           (SELECT r.queue, r.concurrency_key FROM taskd.runs r WHERE r.status = 'queued'
             ORDER BY r.queue DESC, r.concurrency_key DESC LIMIT 1) AS hi;
    IF NOT FOUND THEN
        RETURN;  -- nothing queued in any queue
    END IF;
    IF one_key THEN
        RETURN QUERY
        WITH picked AS (
            SELECT r.id, r.started_at FROM taskd.runs r
             WHERE r.queue = qname AND r.concurrency_key = k
               AND r.status = 'queued' AND r.run_at <= now()
               AND r.task_id = ANY(task_ids)
               AND (r.expires_at IS NULL OR r.expires_at > now() OR r.started_at IS NOT NULL)
               AND r.cancel_requested_at IS NULL
               AND (r.version IS NULL OR NOT pinned
                    OR r.version = task_versions[array_position(task_ids, r.task_id)]
                    OR (r.parent_id IS NULL
                        AND NOT EXISTS (SELECT FROM taskd.steps st WHERE st.run_id = r.id)))
             ORDER BY r.priority DESC, r.run_at, r.id
             LIMIT max_runs
               FOR UPDATE SKIP LOCKED
        ), claimed AS (
            UPDATE taskd.runs r
               SET status = 'executing', attempt = r.attempt + 1, worker_id = worker,
                   lease_expires_at = now() + make_interval(secs => lease_seconds),
                   attempt_started_at = now(), started_at = coalesce(r.started_at, now()),
                   version = CASE
                       WHEN r.version IS NULL
                       THEN task_versions[array_position(task_ids, r.task_id)]
                       WHEN r.version = task_versions[array_position(task_ids, r.task_id)]
                            OR r.parent_id IS NOT NULL
                            OR EXISTS (SELECT FROM taskd.steps st WHERE st.run_id = r.id)
                       THEN r.version
                       ELSE coalesce(task_versions[array_position(task_ids, r.task_id)],
                                     r.version)
                   END
              FROM picked
             WHERE r.id = picked.id
            RETURNING r.id, r.task_id, r.payload, r.attempt, r.max_attempts, r.queue, r.tags,
                      r.metadata,
                      CASE WHEN picked.started_at IS NOT NULL
                           THEN (SELECT count(*) FROM taskd.run_logs l WHERE l.run_id = r.id)
                           ELSE 0 END AS log_lines,
                      r.concurrency_key, r.retry, r.max_duration
        )
        SELECT c.id, c.task_id, c.payload, c.attempt, c.max_attempts, c.queue, c.tags,
               c.metadata, c.log_lines, c.concurrency_key, NULL::boolean, NULL::float8,
               NULL::jsonb, c.retry, c.max_duration
          FROM claimed c
        UNION ALL
        SELECT NULL::uuid, NULL::text, NULL::jsonb, NULL::int, NULL::int, NULL::text,
               NULL::text[], NULL::jsonb, NULL::bigint, NULL::text, false, NULL::float8,
               jsonb_build_object(qname, nullif(k, '')), NULL::jsonb, NULL::float8;
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
                   AND (r.version IS NULL OR NOT pinned
                        OR r.version = task_versions[array_position(task_ids, r.task_id)]
                        OR (r.parent_id IS NULL
                            AND NOT EXISTS (SELECT FROM taskd.steps st WHERE st.run_id = r.id)))
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
                               -- (versions: see the comment at the top of 0017_versions.sql)
                               AND (r.version IS NULL OR NOT pinned
                                    OR r.version
                                       = task_versions[array_position(task_ids, r.task_id)]
                                    OR (r.parent_id IS NULL
                                        AND NOT EXISTS (SELECT FROM taskd.steps st
                                                         WHERE st.run_id = r.id)))
                             ORDER BY r.priority DESC, r.run_at, r.id
                             LIMIT s.n
                               FOR UPDATE SKIP LOCKED) AS p
             WHERE s.n > 0
        )
        UPDATE taskd.runs r
           SET status = 'executing', attempt = r.attempt + 1, worker_id = worker,
               lease_expires_at = now() + make_interval(secs => lease_seconds),
               attempt_started_at = t_start, started_at = coalesce(r.started_at, t_start),
               -- the first start's version, or this daemon's when the run starts over here
               -- with nothing recorded (no step, no parent): what it records next is this
               -- code's, and binds it to this version
               version = CASE
                   WHEN r.version IS NULL THEN task_versions[array_position(task_ids, r.task_id)]
                   WHEN r.version = task_versions[array_position(task_ids, r.task_id)]
                        OR r.parent_id IS NOT NULL
                        OR EXISTS (SELECT FROM taskd.steps st WHERE st.run_id = r.id)
                   THEN r.version
                   ELSE coalesce(task_versions[array_position(task_ids, r.task_id)], r.version)
               END
          FROM picked
         WHERE r.id = picked.id
        RETURNING r.id, r.task_id, r.payload, r.attempt, r.max_attempts, r.queue, r.tags,
                  r.metadata,
                  CASE WHEN picked.started_at IS NOT NULL
                       THEN (SELECT count(*) FROM taskd.run_logs l WHERE l.run_id = r.id)
                       ELSE 0 END,
                  r.concurrency_key, NULL::boolean, NULL::float8, NULL::jsonb, r.retry,
                  r.max_duration;
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
                            held, retry, cursors, NULL::jsonb, NULL::float8;
    END IF;
END
$$;

--
-- Name: complete_token(uuid, jsonb); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.complete_token(token_id uuid, token_data jsonb DEFAULT 'null'::jsonb) RETURNS text
    LANGUAGE plpgsql
    AS $$
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

--
-- Name: FUNCTION complete_token(token_id uuid, token_data jsonb); Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON FUNCTION taskd.complete_token(token_id uuid, token_data jsonb) IS 'Complete a wait token with token_data: the run waiting on it (wait.for_token) resumes and gets the data. Returns ''completed''. SQLSTATE TD404: no such token; TD409: already completed, or timed out; 54000: data over max_payload_bytes.';

--
-- Name: create_schedule(text, text, jsonb); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.create_schedule(task_id text, cron text, options jsonb DEFAULT '{}'::jsonb) RETURNS text
    LANGUAGE plpgsql
    AS $$
DECLARE
    caller   text := 'taskd.create_schedule';
    unknown  text;
    tz       text;
    policy   text;
    created  text;
    body     jsonb;
BEGIN
    IF task_id IS NULL OR task_id = '' THEN
        RAISE EXCEPTION '%: task_id must not be empty', caller USING ERRCODE = 'invalid_parameter_value';
    END IF;
    options := coalesce(options, '{}');
    IF jsonb_typeof(options) <> 'object' THEN
        RAISE EXCEPTION '%: options must be a JSON object', caller USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT string_agg(k, ', ') INTO unknown FROM jsonb_object_keys(options) AS k
     WHERE k NOT IN ('timezone', 'payload', 'external_id', 'dedup_key', 'catch_up');
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION '%: unknown option(s): %', caller, unknown USING ERRCODE = 'invalid_parameter_value';
    END IF;
    tz := coalesce(taskd.schedule_option_text(options, 'timezone', caller), 'UTC');
    policy := coalesce(taskd.schedule_option_text(options, 'catch_up', caller), 'latest');
    PERFORM taskd.check_schedule(cron, tz, policy, caller);
    body := coalesce(options->'payload', 'null'::jsonb);
    PERFORM taskd.check_schedule_payload(body, caller);
    INSERT INTO taskd.schedules AS s (id, task_id, cron, timezone, payload, external_id,
                                      dedup_key, catch_up, declared)
    VALUES ('sched_' || replace(taskd.new_run_id()::text, '-', ''), task_id, cron, tz, body,
            taskd.schedule_option_text(options, 'external_id', caller),
            taskd.schedule_option_text(options, 'dedup_key', caller), policy, false)
    ON CONFLICT (dedup_key) DO UPDATE
       SET task_id = excluded.task_id, cron = excluded.cron, timezone = excluded.timezone,
           payload = excluded.payload, external_id = excluded.external_id,
           catch_up = excluded.catch_up, updated_at = now()
    RETURNING s.id INTO created;
    PERFORM pg_notify('taskd_schedules', created);
    RETURN created;
END
$$;

--
-- Name: FUNCTION create_schedule(task_id text, cron text, options jsonb); Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON FUNCTION taskd.create_schedule(task_id text, cron text, options jsonb) IS 'Create a cron schedule of task_id; returns its id (''sched_'' and 32 hex digits). cron: 5 fields, 6 with seconds first, or a shorthand such as @daily. options (all optional): timezone (IANA name, default UTC), payload (any JSON: every run gets it as ScheduledRun.payload), external_id (text), dedup_key (text: creating again with the same key updates that schedule and returns its id), catch_up (latest, all or none; default latest). The daemons pick it up when the transaction commits. SQLSTATE 22023: a bad argument; 54000: payload over max_payload_bytes.';

--
-- Name: delete_schedule(text); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.delete_schedule(schedule_id text) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    DELETE FROM taskd.schedules s WHERE s.id = schedule_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'taskd.delete_schedule: no schedule with id %', quote_literal(schedule_id)
            USING ERRCODE = 'TD404';
    END IF;
    PERFORM pg_notify('taskd_schedules', schedule_id);
END
$$;

--
-- Name: FUNCTION delete_schedule(schedule_id text); Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON FUNCTION taskd.delete_schedule(schedule_id text) IS 'Delete a schedule; the runs it fired stay (their schedule_id still names it). SQLSTATE TD404: no such schedule.';

--
-- Name: error_fingerprint(jsonb); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.error_fingerprint(error jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
-- The frame's line number is left out of the hash: a deploy that moves the line keeps the group.
SELECT CASE WHEN error IS NULL OR jsonb_typeof(error) <> 'object' THEN NULL
       ELSE left(encode(sha256(convert_to(
                coalesce(error->>'type', '') || E'\n'
                || taskd.error_message_shape(error->>'message') || E'\n'
                || coalesce(regexp_replace(taskd.error_frame(error->>'traceback'),
                                           ':[0-9]+ in ', ' in '), ''),
                'UTF8')), 'hex'), 16)
       END
$$;

--
-- Name: FUNCTION error_fingerprint(error jsonb); Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON FUNCTION taskd.error_fingerprint(error jsonb) IS 'The error group of a failure: the first 16 hex digits of the SHA-256 of its type, its message''s shape (taskd.error_message_shape) and its top frame of task code (taskd.error_frame, without the line number).';

--
-- Name: error_frame(text); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.error_frame(traceback text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $_$
-- The last frame of a Python traceback that is the task's own code: not inside the standard
-- library, an installed package (site-packages, dist-packages) or taskd itself. Its file is
-- given as its last two path components (stable across deploy directories):
-- "tasks/orders.py:12 in charge". NULL when no frame is the task's.
DECLARE
    m     text[];
    found text;
BEGIN
    FOR m IN SELECT regexp_matches(right(coalesce(traceback, ''), 8000),
                                   'File "([^"\n]*)", line ([0-9]+), in ([^\n]*)', 'g') LOOP
        IF m[1] !~ '(/lib/python[0-9.]*/|/site-packages/|/dist-packages/|^<)'
           AND m[1] !~ '/taskd/(admin|sdk|store|testing|worker)/[^/]*$|/taskd/[^/]*\.py$' THEN
            found := substring(m[1] FROM '([^/]*/?[^/]*)$') || ':' || m[2] || ' in '
                     || left(m[3], 200);
        END IF;
    END LOOP;
    RETURN found;
END
$_$;

--
-- Name: FUNCTION error_frame(traceback text); Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON FUNCTION taskd.error_frame(traceback text) IS 'The top frame of task code in a Python traceback text: its last frame outside the standard library, installed packages and taskd, as "dir/file.py:LINE in function"; NULL if none.';

--
-- Name: error_message_shape(text); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.error_message_shape(message text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
SELECT regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(
           left(coalesce(message, ''), 2000),
           -- quoted strings first: what they quote (numbers included) is data. A single-quoted
           -- one starts at a quote no letter or digit precedes and ends at one none follows:
           -- an apostrophe inside a word (can't, O'Brien) opens or closes none
           '(?<![[:alnum:]])''(?:[^'']|''(?=[[:alnum:]]))*''(?![[:alnum:]])|"[^"]*"',
           '<str>', 'g'),
           '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}',
           '<id>', 'g'),
           -- 0x..., or a word of 6+ hex digits holding a digit and a letter (ab12cd34)
           '0[xX][0-9a-fA-F]+|\m(?=[0-9a-fA-F]{6,}\M)(?=[a-fA-F]*[0-9])(?=[0-9]*[a-fA-F])'
           '[0-9a-fA-F]+\M', '<hex>', 'g'),
           '[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?', '<num>', 'g'),
           '\s+', ' ', 'g')
$$;

--
-- Name: FUNCTION error_message_shape(message text); Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON FUNCTION taskd.error_message_shape(message text) IS 'An error message with its data replaced by placeholders (quoted strings <str>: an apostrophe inside a word opens none; UUIDs <id>, hexadecimal <hex>, numbers <num>, runs of white space one space), first 2,000 characters: failures that differ only in their data have one shape.';

--
-- Name: llm_costs_daily_add(); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.llm_costs_daily_add() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    -- in key order: two statements adding to the same rows lock them in the same order
    INSERT INTO taskd.llm_costs_daily AS d (
        dimension, day, grp, calls, input_tokens, output_tokens, cost_usd,
        cache_write_tokens, cache_read_tokens, priced_calls, unpriced_calls)
    SELECT s.dimension, s.day, s.grp, count(*), sum(s.input_tokens), sum(s.output_tokens),
           coalesce(sum(s.cost_usd), 0), sum(s.cache_write_tokens), sum(s.cache_read_tokens),
           count(s.cost_usd),
           count(*) FILTER (
               WHERE s.cost_usd IS NULL
                 AND s.input_tokens + s.output_tokens + s.cache_write_tokens
                     + s.cache_read_tokens > 0)
      FROM (SELECT g.dimension, (c.started_at AT TIME ZONE 'UTC')::date AS day, g.grp,
                   c.input_tokens, c.output_tokens, c.cache_write_tokens, c.cache_read_tokens,
                   c.cost_usd
              FROM added c
             CROSS JOIN LATERAL (
                 VALUES ('all', ''), ('task', c.task_id),
                        ('key', coalesce(c.concurrency_key, '')), ('model', c.model)
                 UNION ALL
                 SELECT 'tag', t.tag FROM unnest(c.tags) AS t (tag)
                 UNION ALL
                 SELECT 'tag', '' WHERE c.tags = '{}'
             ) AS g (dimension, grp)) AS s
     GROUP BY 1, 2, 3
     ORDER BY 1, 2, 3
    ON CONFLICT (dimension, day, grp) DO UPDATE
       SET calls = d.calls + excluded.calls,
           input_tokens = d.input_tokens + excluded.input_tokens,
           output_tokens = d.output_tokens + excluded.output_tokens,
           cost_usd = d.cost_usd + excluded.cost_usd,
           cache_write_tokens = d.cache_write_tokens + excluded.cache_write_tokens,
           cache_read_tokens = d.cache_read_tokens + excluded.cache_read_tokens,
           priced_calls = d.priced_calls + excluded.priced_calls,
           unpriced_calls = d.unpriced_calls + excluded.unpriced_calls;
    RETURN NULL;
END;
$$;

--
-- Name: llm_costs_daily_remove(); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.llm_costs_daily_remove() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    UPDATE taskd.llm_costs_daily d
       SET calls = d.calls - r.calls,
           input_tokens = d.input_tokens - r.input_tokens,
           output_tokens = d.output_tokens - r.output_tokens,
           cost_usd = d.cost_usd - r.cost_usd,
           cache_write_tokens = d.cache_write_tokens - r.cache_write_tokens,
           cache_read_tokens = d.cache_read_tokens - r.cache_read_tokens,
           priced_calls = d.priced_calls - r.priced_calls,
           unpriced_calls = d.unpriced_calls - r.unpriced_calls
      FROM (SELECT s.dimension, s.day, s.grp, count(*) AS calls,
                   sum(s.input_tokens) AS input_tokens, sum(s.output_tokens) AS output_tokens,
                   coalesce(sum(s.cost_usd), 0) AS cost_usd,
                   sum(s.cache_write_tokens) AS cache_write_tokens,
                   sum(s.cache_read_tokens) AS cache_read_tokens,
                   count(s.cost_usd) AS priced_calls,
                   count(*) FILTER (
                       WHERE s.cost_usd IS NULL
                         AND s.input_tokens + s.output_tokens + s.cache_write_tokens
                             + s.cache_read_tokens > 0) AS unpriced_calls
              FROM (SELECT g.dimension, (c.started_at AT TIME ZONE 'UTC')::date AS day, g.grp,
                           c.input_tokens, c.output_tokens, c.cache_write_tokens,
                           c.cache_read_tokens, c.cost_usd
                      FROM removed c
                     CROSS JOIN LATERAL (
                         VALUES ('all', ''), ('task', c.task_id),
                                ('key', coalesce(c.concurrency_key, '')), ('model', c.model)
                         UNION ALL
                         SELECT 'tag', t.tag FROM unnest(c.tags) AS t (tag)
                         UNION ALL
                         SELECT 'tag', '' WHERE c.tags = '{}'
                     ) AS g (dimension, grp)) AS s
             GROUP BY 1, 2, 3
             ORDER BY 1, 2, 3) AS r
     WHERE (d.dimension, d.day, d.grp) = (r.dimension, r.day, r.grp);
    DELETE FROM taskd.llm_costs_daily d
     WHERE d.calls <= 0
       AND (d.dimension, d.day) IN (
           SELECT g.dimension, (c.started_at AT TIME ZONE 'UTC')::date
             FROM removed c
            CROSS JOIN (VALUES ('all'), ('task'), ('key'), ('model'), ('tag')) AS g (dimension));
    RETURN NULL;
END;
$$;

--
-- Name: new_run_id(); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.new_run_id() RETURNS uuid
    LANGUAGE sql
    AS $$SELECT uuidv7()$$;

--
-- Name: option_seconds(text, jsonb); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.option_seconds(name text, value jsonb) RETURNS double precision
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
    seconds float8;
BEGIN
    IF jsonb_typeof(value) = 'number' THEN
        seconds := value::text::float8;
    ELSIF jsonb_typeof(value) = 'string' THEN
        BEGIN
            seconds := extract(epoch FROM (value #>> '{}')::interval);
        EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow
                       OR interval_field_overflow THEN
            seconds := NULL;
        END;
    END IF;
    IF seconds IS NULL OR seconds = 'NaN'::float8 OR seconds IN ('Infinity', '-Infinity') THEN
        RAISE EXCEPTION 'taskd.trigger: % must be seconds or an interval such as "10s", "5 minutes" (got %)',
            name, value USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN seconds;
END
$$;

--
-- Name: retry_option(jsonb); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.retry_option(retry jsonb) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
    unknown  text;
    result   jsonb := '{}';
    seconds  float8;
    number   numeric;
    k        text;
BEGIN
    IF jsonb_typeof(retry) <> 'object' THEN
        RAISE EXCEPTION 'taskd.trigger: retry must be a JSON object such as {"max_attempts": 5, "min_delay": "1s", "factor": 2} (got %)',
            retry USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT string_agg(key, ', ') INTO unknown FROM jsonb_object_keys(retry) AS key
     WHERE key NOT IN ('max_attempts', 'min_delay', 'max_delay', 'factor', 'jitter');
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'taskd.trigger: unknown retry field(s): % (known: max_attempts, min_delay, max_delay, factor, jitter)',
            unknown USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF retry ? 'max_attempts' THEN
        IF jsonb_typeof(retry->'max_attempts') <> 'number' THEN
            number := NULL;
        ELSE
            number := (retry->>'max_attempts')::numeric;
        END IF;
        IF number IS NULL OR number <> trunc(number) OR number < 1 OR number >= 2147483648 THEN
            RAISE EXCEPTION 'taskd.trigger: retry.max_attempts must be a whole number of at least 1 (got %)',
                retry->'max_attempts' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        result := result || jsonb_build_object('max_attempts', number::int);
    END IF;
    FOREACH k IN ARRAY ARRAY['min_delay', 'max_delay'] LOOP
        IF retry ? k THEN
            seconds := taskd.option_seconds('retry.' || k, retry->k);
            IF seconds < 0 OR seconds > 3155760000 THEN
                RAISE EXCEPTION 'taskd.trigger: retry.% must be at least 0 and at most 100 years (got %)',
                    k, retry->k USING ERRCODE = 'invalid_parameter_value';
            END IF;
            result := result || jsonb_build_object(k, seconds);
        END IF;
    END LOOP;
    IF (result->>'min_delay')::float8 > (result->>'max_delay')::float8 THEN
        RAISE EXCEPTION 'taskd.trigger: retry.min_delay (%s) must not exceed retry.max_delay (%s)',
            result->>'min_delay', result->>'max_delay' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF retry ? 'factor' THEN
        IF jsonb_typeof(retry->'factor') <> 'number' OR (retry->>'factor')::numeric < 1 THEN
            RAISE EXCEPTION 'taskd.trigger: retry.factor must be a number of at least 1 (got %)',
                retry->'factor' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        result := result || jsonb_build_object('factor', (retry->>'factor')::float8);
    END IF;
    IF retry ? 'jitter' THEN
        IF jsonb_typeof(retry->'jitter') <> 'boolean' THEN
            RAISE EXCEPTION 'taskd.trigger: retry.jitter must be true or false (got %)',
                retry->'jitter' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        result := result || jsonb_build_object('jitter', retry->'jitter');
    END IF;
    RETURN result;
END
$$;

--
-- Name: schedule_option_text(jsonb, text, text); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.schedule_option_text(options jsonb, key text, caller text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    AS $$
BEGIN
    IF jsonb_typeof(options->key) NOT IN ('string', 'null') THEN
        RAISE EXCEPTION '%: % must be a string, not %', caller, key, options->key
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN options->>key;
END
$$;

--
-- Name: FUNCTION schedule_option_text(options jsonb, key text, caller text); Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON FUNCTION taskd.schedule_option_text(options jsonb, key text, caller text) IS 'A text option of taskd.create_schedule and taskd.update_schedule.';

--
-- Name: schedule_time(timestamp with time zone, text); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.schedule_time(fire_at timestamp with time zone, zone text) RETURNS text
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
    local_at timestamp := fire_at AT TIME ZONE zone;
    shift    interval := (fire_at AT TIME ZONE zone) - (fire_at AT TIME ZONE 'UTC');
    size     interval := CASE WHEN shift < interval '0' THEN -shift ELSE shift END;
BEGIN
    IF fire_at IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN to_char(local_at, 'YYYY-MM-DD"T"HH24:MI:SS.US')
        || CASE WHEN shift < interval '0' THEN '-' ELSE '+' END
        || to_char(extract(hour FROM size), 'FM00') || ':'
        || to_char(extract(minute FROM size), 'FM00');
END
$$;

--
-- Name: FUNCTION schedule_time(fire_at timestamp with time zone, zone text); Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON FUNCTION taskd.schedule_time(fire_at timestamp with time zone, zone text) IS 'A fire time as ScheduledRun.timestamp writes it, for taskd.trigger_schedule.';

--
-- Name: send_event(text, jsonb); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.send_event(event_name text, event_payload jsonb DEFAULT '{}'::jsonb) RETURNS uuid
    LANGUAGE plpgsql
    AS $$
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

--
-- Name: FUNCTION send_event(event_name text, event_payload jsonb); Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON FUNCTION taskd.send_event(event_name text, event_payload jsonb) IS 'Record an event named event_name and create one run of every task subscribed to it (@task(on_event=...)), with event_payload as payload, in the caller''s transaction; returns the event''s id (each run carries it as event_id). An event no task subscribes to is recorded all the same.';

--
-- Name: trigger(text, jsonb, jsonb); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.trigger(task_id text, payload jsonb DEFAULT '{}'::jsonb, options jsonb DEFAULT '{}'::jsonb) RETURNS uuid
    LANGUAGE plpgsql
    AS $$
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
    retry_o  jsonb;
    attempts int := (options->>'max_attempts')::int;
    duration float8;
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
                     'idempotency_key', 'idempotency_ttl', 'concurrency_key', 'retry',
                     'max_duration');
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'taskd.trigger: unknown option(s): %', unknown USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF options ? 'retry' AND options->'retry' <> 'null' THEN
        retry_o := taskd.retry_option(options->'retry');
        IF retry_o ? 'max_attempts' THEN
            IF attempts IS NOT NULL AND attempts <> (retry_o->>'max_attempts')::int THEN
                RAISE EXCEPTION 'taskd.trigger: max_attempts (%) and retry.max_attempts (%) differ: give it once',
                    attempts, retry_o->>'max_attempts' USING ERRCODE = 'invalid_parameter_value';
            END IF;
            attempts := (retry_o->>'max_attempts')::int;
            retry_o := retry_o - 'max_attempts';
        END IF;
        retry_o := nullif(retry_o, '{}'::jsonb);
    END IF;
    IF options ? 'max_duration' AND options->'max_duration' <> 'null' THEN
        duration := taskd.option_seconds('max_duration', options->'max_duration');
        IF duration <= 0 OR duration > 3155760000 THEN
            RAISE EXCEPTION 'taskd.trigger: max_duration must be positive and at most 100 years (got %)',
                options->'max_duration' USING ERRCODE = 'invalid_parameter_value';
        END IF;
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
                            expires_at, idempotency_key, concurrency_key, retry, max_duration)
    VALUES (run_id, task_id, q, coalesce(payload, 'null'::jsonb),
            coalesce((options->>'priority')::int, 0), start_at,
            attempts,
            coalesce(ARRAY(SELECT jsonb_array_elements_text(options->'tags')), '{}'),
            CASE WHEN options ? 'ttl' THEN now() + CASE jsonb_typeof(options->'ttl')
                WHEN 'number' THEN make_interval(secs => (options->>'ttl')::float8)
                ELSE (options->>'ttl')::interval END END,
            idem_key, coalesce(options->>'concurrency_key', ''), retry_o, duration);
    PERFORM pg_notify('taskd_wakeup', q);
    RETURN run_id;
END
$$;

--
-- Name: FUNCTION trigger(task_id text, payload jsonb, options jsonb); Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON FUNCTION taskd.trigger(task_id text, payload jsonb, options jsonb) IS 'Create a run of task_id with payload, in the caller''s transaction; returns the run id. The daemons are notified when the transaction commits. options (all optional): delay (seconds or an interval: ''10s'', ''5 minutes''), run_at (timestamptz), priority (int, higher starts first), max_attempts (int), retry (object: some of max_attempts, min_delay, max_delay, factor, jitter, each overriding the task''s), max_duration (seconds or an interval), tags (array of text), queue (text), ttl (a run not started within it ends expired), idempotency_key (text) with idempotency_ttl (default 24 hours: a second trigger with the key returns the first run''s id and creates nothing), concurrency_key (text: runs of one key share the queue''s per-key limit). SQLSTATE 22023: a bad option; 54000: payload over max_payload_bytes.';

--
-- Name: trigger_schedule(text); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.trigger_schedule(schedule_id text) RETURNS uuid
    LANGUAGE plpgsql
    AS $$
DECLARE
    run_id uuid := taskd.new_run_id();
    s      taskd.schedules%ROWTYPE;
    q      text;
BEGIN
    SELECT * INTO s FROM taskd.schedules x WHERE x.id = schedule_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'taskd.trigger_schedule: no schedule with id %', quote_literal(schedule_id)
            USING ERRCODE = 'TD404';
    END IF;
    q := coalesce((SELECT t.queue FROM taskd.tasks t WHERE t.id = s.task_id), 'default');
    INSERT INTO taskd.runs (id, task_id, queue, payload, schedule_id)
    VALUES (run_id, s.task_id, q,
            jsonb_build_object(
                'timestamp', taskd.schedule_time(now(), s.timezone),
                'last_timestamp', taskd.schedule_time(s.last_fired_at, s.timezone),
                'schedule_id', s.id,
                'timezone', s.timezone,
                'external_id', s.external_id,
                'payload', s.payload,
                'manual', true),
            s.id);
    PERFORM pg_notify('taskd_wakeup', q);
    RETURN run_id;
END
$$;

--
-- Name: FUNCTION trigger_schedule(schedule_id text); Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON FUNCTION taskd.trigger_schedule(schedule_id text) IS 'Fire a schedule now, paused or not; returns the new run''s id. The run gets the payload a scheduled fire gives (ScheduledRun: timestamp = now, in the schedule''s timezone), with manual = true and no scheduled_for; the next scheduled fire is unchanged. SQLSTATE TD404: no such schedule.';

--
-- Name: update_schedule(text, jsonb); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.update_schedule(schedule_id text, changes jsonb) RETURNS text
    LANGUAGE plpgsql
    AS $$
DECLARE
    caller  text := 'taskd.update_schedule';
    unknown text;
    sched   taskd.schedules%ROWTYPE;
BEGIN
    changes := coalesce(changes, '{}');
    IF jsonb_typeof(changes) <> 'object' THEN
        RAISE EXCEPTION '%: changes must be a JSON object', caller USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT string_agg(k, ', ') INTO unknown FROM jsonb_object_keys(changes) AS k
     WHERE k NOT IN ('cron', 'timezone', 'catch_up', 'payload', 'external_id', 'active');
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION '%: unknown change(s): %', caller, unknown USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF changes ? 'active' AND jsonb_typeof(changes->'active') <> 'boolean' THEN
        RAISE EXCEPTION '%: active must be true or false, not %', caller, changes->'active'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO sched FROM taskd.schedules s WHERE s.id = schedule_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION '%: no schedule with id %', caller, quote_literal(schedule_id)
            USING ERRCODE = 'TD404';
    END IF;
    IF changes ? 'cron' THEN
        sched.cron := taskd.schedule_option_text(changes, 'cron', caller);
    END IF;
    IF changes ? 'timezone' THEN
        sched.timezone := taskd.schedule_option_text(changes, 'timezone', caller);
    END IF;
    IF changes ? 'catch_up' THEN
        sched.catch_up := taskd.schedule_option_text(changes, 'catch_up', caller);
    END IF;
    PERFORM taskd.check_schedule(sched.cron, sched.timezone, sched.catch_up, caller);
    IF changes ? 'payload' THEN
        sched.payload := changes->'payload';
        PERFORM taskd.check_schedule_payload(sched.payload, caller);
    END IF;
    IF changes ? 'external_id' THEN
        sched.external_id := taskd.schedule_option_text(changes, 'external_id', caller);
    END IF;
    UPDATE taskd.schedules s
       SET cron = sched.cron, timezone = sched.timezone, catch_up = sched.catch_up,
           payload = sched.payload, external_id = sched.external_id,
           active = coalesce((changes->>'active')::boolean, s.active), updated_at = now()
     WHERE s.id = schedule_id;
    PERFORM pg_notify('taskd_schedules', schedule_id);
    RETURN schedule_id;
END
$$;

--
-- Name: FUNCTION update_schedule(schedule_id text, changes jsonb); Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON FUNCTION taskd.update_schedule(schedule_id text, changes jsonb) IS 'Change a schedule; returns its id. changes: cron, timezone, catch_up (each replaces the value), payload (null clears it), external_id (null clears it), active (false pauses, true resumes). A key left out keeps its value. SQLSTATE TD404: no such schedule; 22023: a bad value.';

--
-- Name: webhook_capture(); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.webhook_capture() RETURNS trigger
    LANGUAGE plpgsql
    SET enable_hashjoin TO 'on'
    SET enable_mergejoin TO 'on'
    SET enable_seqscan TO 'on'
    SET enable_sort TO 'on'
    SET enable_bitmapscan TO 'on'
    AS $$
DECLARE
    changed record;
    run taskd.runs;
    old_status text;
    old_attempt int;
    event text;
    body jsonb;
    sub record;
    delivery uuid;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM taskd.webhook_subscriptions WHERE enabled AND NOT paused) THEN
        RETURN NULL;
    END IF;
    FOR changed IN
        SELECT n AS run, o.status AS old_status, o.attempt AS old_attempt
          FROM changed_new n JOIN changed_old o ON o.id = n.id
         WHERE o.status IS DISTINCT FROM n.status AND n.task_id <> 'taskd.webhook'
    LOOP
        run := changed.run;
        old_status := changed.old_status;
        old_attempt := changed.old_attempt;
        event := CASE run.status
            WHEN 'executing' THEN 'run.started'
            WHEN 'completed' THEN 'run.completed'
            WHEN 'failed' THEN 'run.failed'
            WHEN 'canceled' THEN 'run.canceled'
            WHEN 'expired' THEN 'run.expired'
            WHEN 'waiting' THEN 'run.waiting'
            -- an attempt that failed (the completer's retry, the rescuer's lost attempt); a
            -- hand-back at a drain gives its attempt back and says nothing
            WHEN 'queued' THEN CASE WHEN old_status = 'executing' AND run.attempt >= old_attempt
                                    THEN 'run.attempt_failed' END
        END;
        CONTINUE WHEN event IS NULL;
        body := NULL;
        FOR sub IN
            SELECT s.id FROM taskd.webhook_subscriptions s
             WHERE s.enabled AND NOT s.paused AND event = ANY (s.events)
               AND (s.tasks IS NULL OR run.task_id = ANY (s.tasks))
               AND (s.queues IS NULL OR run.queue = ANY (s.queues))
               AND (s.tags IS NULL OR run.tags && s.tags)
             ORDER BY s.id
        LOOP
            body := coalesce(body, taskd.webhook_payload(run, event));
            INSERT INTO taskd.webhook_deliveries (subscription_id, run_id, seq, event, payload)
            VALUES (sub.id, run.id,
                    coalesce((SELECT max(w.seq) FROM taskd.webhook_deliveries w
                               WHERE w.subscription_id = sub.id AND w.run_id = run.id), 0) + 1,
                    event, body)
            RETURNING id INTO delivery;
            -- The deliveries before it, locked: a delivery run ending now (which marks its
            -- delivery with an UPDATE, then starts the next pending one) cannot see this
            -- uncommitted one, so the two serialize on its row: if it ended first, this one
            -- finds it delivered and starts itself; if not, it waits for this commit and then
            -- finds this one pending.
            PERFORM 1 FROM taskd.webhook_deliveries w
              WHERE w.subscription_id = sub.id AND w.run_id = run.id
                AND w.status IN ('pending', 'sending') AND w.id <> delivery
                FOR UPDATE;
            IF NOT FOUND THEN
                PERFORM taskd.webhook_start_delivery(delivery);
            END IF;
        END LOOP;
    END LOOP;
    RETURN NULL;
END
$$;

--
-- Name: FUNCTION webhook_capture(); Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON FUNCTION taskd.webhook_capture() IS 'Statement trigger on taskd.runs: returns at once while no status-webhook subscription is enabled.';

--
-- Name: webhook_delivery_ended(); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.webhook_delivery_ended() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    done record;
    following uuid;
BEGIN
    UPDATE taskd.webhook_deliveries w
       SET status = CASE WHEN NEW.status = 'completed' THEN 'delivered' ELSE 'dead' END,
           delivered_at = CASE WHEN NEW.status = 'completed' THEN now() END,
           last_error = CASE WHEN NEW.status = 'completed' THEN w.last_error
                             ELSE coalesce(NEW.error->>'message', w.last_error, 'its run ended ' || NEW.status) END
     WHERE w.delivery_run_id = NEW.id AND w.status = 'sending'
    RETURNING w.subscription_id, w.run_id INTO done;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM taskd.webhook_deliveries w
                WHERE w.subscription_id = done.subscription_id AND w.run_id = done.run_id
                  AND w.status = 'sending') THEN
        RETURN NULL;  -- a redelivery ended while the chain's head is still being sent
    END IF;
    SELECT w.id INTO following FROM taskd.webhook_deliveries w
     WHERE w.subscription_id = done.subscription_id AND w.run_id = done.run_id
       AND w.status = 'pending'
     ORDER BY w.seq LIMIT 1;
    IF following IS NOT NULL THEN
        PERFORM taskd.webhook_start_delivery(following);
    END IF;
    RETURN NULL;
END
$$;

--
-- Name: runs; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.runs (
    id uuid DEFAULT taskd.new_run_id() NOT NULL,
    task_id text NOT NULL,
    queue text DEFAULT 'default'::text NOT NULL,
    status text DEFAULT 'queued'::text NOT NULL,
    payload jsonb DEFAULT 'null'::jsonb NOT NULL,
    output jsonb,
    error jsonb,
    priority integer DEFAULT 0 NOT NULL,
    run_at timestamp with time zone DEFAULT now() NOT NULL,
    attempt integer DEFAULT 0 NOT NULL,
    max_attempts integer,
    tags text[] DEFAULT '{}'::text[] NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    started_at timestamp with time zone,
    attempt_started_at timestamp with time zone,
    finished_at timestamp with time zone,
    worker_id uuid,
    lease_expires_at timestamp with time zone,
    expires_at timestamp with time zone,
    cancel_requested_at timestamp with time zone,
    replayed_from uuid,
    event_id uuid,
    schedule_id text,
    scheduled_for timestamp with time zone,
    metadata jsonb,
    parent_id uuid,
    idempotency_key text,
    concurrency_key text DEFAULT ''::text NOT NULL COLLATE pg_catalog."C",
    retry jsonb,
    max_duration double precision,
    version text,
    CONSTRAINT runs_concurrency_key_check CHECK ((length(concurrency_key) <= 200)),
    CONSTRAINT runs_max_attempts_check CHECK (((max_attempts IS NULL) OR (max_attempts >= 1))),
    CONSTRAINT runs_status_check CHECK ((status = ANY (ARRAY['queued'::text, 'executing'::text, 'waiting'::text, 'completed'::text, 'failed'::text, 'canceled'::text, 'expired'::text]))),
    CONSTRAINT runs_task_id_check CHECK ((task_id <> ''::text)),
    CONSTRAINT runs_times_in_range CHECK (((run_at < '9000-01-01 00:00:00+00'::timestamp with time zone) AND ((expires_at IS NULL) OR (expires_at < '9000-01-01 00:00:00+00'::timestamp with time zone))))
)
WITH (fillfactor='80', autovacuum_vacuum_scale_factor='0.02', autovacuum_analyze_scale_factor='0.02', autovacuum_vacuum_cost_limit='2000');

--
-- Name: TABLE runs; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON TABLE taskd.runs IS 'One row per run: its state, payload, output or error, and where it stands. Finished runs are deleted after [retention] runs.';

--
-- Name: COLUMN runs.id; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.id IS 'The run id: a UUIDv7, so ids sort by creation.';

--
-- Name: COLUMN runs.task_id; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.task_id IS 'The task it runs (@task(id=...)).';

--
-- Name: COLUMN runs.queue; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.queue IS 'The queue it waits in (the task''s, unless the trigger gave one).';

--
-- Name: COLUMN runs.status; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.status IS 'queued (includes delayed runs and retries), executing, waiting, then completed, failed, canceled or expired (terminal).';

--
-- Name: COLUMN runs.payload; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.payload IS 'The JSON payload it was triggered with.';

--
-- Name: COLUMN runs.output; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.output IS 'What the task returned, as JSON (completed runs).';

--
-- Name: COLUMN runs.error; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.error IS 'The last attempt''s error (the final one once failed): {"type": exception class name, "message": text, "traceback": text or null}; for failures outside the task''s code, type is Canceled, Expired, WorkerLost, UnknownTask, OutcomeNotStored or ExecutorError.';

--
-- Name: COLUMN runs.priority; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.priority IS 'Higher starts first (within its queue and concurrency key).';

--
-- Name: COLUMN runs.run_at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.run_at IS 'When it may start (queued), or when it next looks (waiting).';

--
-- Name: COLUMN runs.attempt; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.attempt IS 'Attempts started so far (1-based once started).';

--
-- Name: COLUMN runs.max_attempts; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.max_attempts IS 'The trigger''s attempt limit; NULL: the task''s retry policy.';

--
-- Name: COLUMN runs.tags; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.tags IS 'The trigger''s tags.';

--
-- Name: COLUMN runs.created_at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.created_at IS 'When it was triggered.';

--
-- Name: COLUMN runs.started_at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.started_at IS 'When its first attempt started.';

--
-- Name: COLUMN runs.attempt_started_at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.attempt_started_at IS 'When its current (or last) attempt started.';

--
-- Name: COLUMN runs.finished_at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.finished_at IS 'When it reached a terminal state.';

--
-- Name: COLUMN runs.worker_id; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.worker_id IS 'The worker (taskd.workers.id) holding it while executing.';

--
-- Name: COLUMN runs.lease_expires_at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.lease_expires_at IS 'Set exactly while executing: past it, another daemon hands the run back.';

--
-- Name: COLUMN runs.expires_at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.expires_at IS 'The ttl''s deadline: a run not started by then ends expired.';

--
-- Name: COLUMN runs.cancel_requested_at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.cancel_requested_at IS 'When a cancel was asked for (taskd.cancel on an executing run).';

--
-- Name: COLUMN runs.replayed_from; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.replayed_from IS 'The run this one replays.';

--
-- Name: COLUMN runs.event_id; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.event_id IS 'The event that created it (taskd.events.id).';

--
-- Name: COLUMN runs.schedule_id; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.schedule_id IS 'The schedule that fired it (taskd.schedules.id).';

--
-- Name: COLUMN runs.scheduled_for; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.scheduled_for IS 'The fire time it is for (NULL for a schedule fired on demand).';

--
-- Name: COLUMN runs.metadata; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.metadata IS 'What the task set with ctx.set_metadata (a JSON object), kept after it ends.';

--
-- Name: COLUMN runs.parent_id; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.parent_id IS 'The run that created this one (child runs, trigger_and_wait).';

--
-- Name: COLUMN runs.idempotency_key; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.idempotency_key IS 'The key it was triggered with, if any.';

--
-- Name: COLUMN runs.concurrency_key; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.concurrency_key IS 'Its concurrency key ('''' = none): runs of one key in one queue share the per-key limit.';

--
-- Name: COLUMN runs.retry; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.retry IS 'The trigger''s own backoff (some of min_delay, max_delay, factor, jitter); NULL: the task''s.';

--
-- Name: COLUMN runs.max_duration; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.max_duration IS 'Seconds an attempt may run, given at trigger; NULL: the task''s max_duration.';

--
-- Name: COLUMN runs.version; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.runs.version IS 'The version of the task''s code that first started the run (@task(version=...), else [worker] version of the daemon that claimed it; another version''s daemon that starts it again before it recorded a step takes it over); a child''s is inherited at trigger time. NULL until first started.';

--
-- Name: webhook_payload(taskd.runs, text); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.webhook_payload(r taskd.runs, event text) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
SELECT jsonb_build_object(
    'type', event,
    'timestamp', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'data', jsonb_build_object(
        'id', r.id,
        'task', r.task_id,
        'status', r.status,
        'attempt', r.attempt,
        'max_attempts', coalesce(r.max_attempts,
                                 (SELECT t.max_attempts FROM taskd.tasks t WHERE t.id = r.task_id)),
        'queue', r.queue,
        'tags', to_jsonb(r.tags),
        'metadata', r.metadata,
        'output', CASE WHEN r.status = 'completed' THEN r.output END,
        'error', CASE WHEN r.status IN ('failed', 'queued', 'canceled', 'expired') THEN r.error END,
        'created_at', r.created_at,
        'started_at', r.started_at,
        'finished_at', r.finished_at,
        'idempotency_key', r.idempotency_key,
        'parent_id', r.parent_id,
        'version', r.version
    )
)
$$;

--
-- Name: FUNCTION webhook_payload(r taskd.runs, event text); Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON FUNCTION taskd.webhook_payload(r taskd.runs, event text) IS 'The JSON body of a status webhook: {type, timestamp, data: the run''s state}.';

--
-- Name: webhook_start_delivery(uuid); Type: FUNCTION; Schema: taskd; Owner: -
--

CREATE FUNCTION taskd.webhook_start_delivery(delivery uuid) RETURNS uuid
    LANGUAGE plpgsql
    AS $$
DECLARE
    d record;
    sub_name text;
    sender uuid;
BEGIN
    SELECT w.id, w.event, w.run_id, w.subscription_id INTO d
      FROM taskd.webhook_deliveries w WHERE w.id = delivery;
    SELECT s.name INTO sub_name FROM taskd.webhook_subscriptions s WHERE s.id = d.subscription_id;
    sender := taskd.trigger('taskd.webhook',
        jsonb_build_object('delivery_id', d.id, 'subscription', sub_name, 'event', d.event,
                           'run_id', d.run_id),
        jsonb_build_object('queue', 'taskd.webhooks', 'tags', jsonb_build_array('webhook:' || sub_name)));
    UPDATE taskd.webhook_deliveries SET status = 'sending', delivery_run_id = sender
     WHERE id = delivery;
    RETURN sender;
END
$$;

--
-- Name: attempts; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.attempts (
    run_id uuid NOT NULL,
    attempt integer NOT NULL,
    worker_id uuid,
    started_at timestamp with time zone NOT NULL,
    finished_at timestamp with time zone NOT NULL,
    outcome text NOT NULL,
    error jsonb,
    fingerprint text,
    CONSTRAINT attempts_outcome_check CHECK ((outcome = ANY (ARRAY['completed'::text, 'failed'::text, 'timed_out'::text, 'canceled'::text, 'lost'::text])))
);

--
-- Name: TABLE attempts; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON TABLE taskd.attempts IS 'One row per finished attempt of a run (written when the attempt ends; deleted with its run).';

--
-- Name: COLUMN attempts.run_id; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.attempts.run_id IS 'The run (taskd.runs.id).';

--
-- Name: COLUMN attempts.attempt; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.attempts.attempt IS 'The attempt''s number, from 1.';

--
-- Name: COLUMN attempts.worker_id; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.attempts.worker_id IS 'The worker that ran it (taskd.workers.id).';

--
-- Name: COLUMN attempts.started_at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.attempts.started_at IS 'When the attempt started.';

--
-- Name: COLUMN attempts.finished_at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.attempts.finished_at IS 'When it ended (for a lost attempt: when it was found lost).';

--
-- Name: COLUMN attempts.outcome; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.attempts.outcome IS 'completed, failed, timed_out (max_duration exceeded), canceled, or lost (its worker died).';

--
-- Name: COLUMN attempts.error; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.attempts.error IS 'The attempt''s error, shaped as taskd.runs.error; NULL when completed.';

--
-- Name: COLUMN attempts.fingerprint; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.attempts.fingerprint IS 'The error group of a failed or timed-out attempt (taskd.error_fingerprint of its error), written with the attempt; NULL for the other outcomes.';

--
-- Name: events; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.events (
    id uuid NOT NULL,
    name text NOT NULL,
    payload jsonb DEFAULT 'null'::jsonb NOT NULL,
    runs integer DEFAULT 0 NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT events_name_check CHECK ((name <> ''::text))
);

--
-- Name: TABLE events; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON TABLE taskd.events IS 'Events recorded by send_event (Python, SQL), deleted after [retention] events.';

--
-- Name: COLUMN events.id; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.events.id IS 'The event id (runs it created carry it as event_id).';

--
-- Name: COLUMN events.name; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.events.name IS 'The event''s name (what @task(on_event=...) subscribes to).';

--
-- Name: COLUMN events.payload; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.events.payload IS 'Its JSON payload (each run it created got it).';

--
-- Name: COLUMN events.runs; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.events.runs IS 'How many runs it created.';

--
-- Name: COLUMN events.created_at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.events.created_at IS 'When it was sent.';

--
-- Name: failure_hooks; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.failure_hooks (
    run_id uuid NOT NULL,
    task_id text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    claimed_by uuid,
    claimed_at timestamp with time zone
);

--
-- Name: idempotency_keys; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.idempotency_keys (
    task_id text NOT NULL,
    idempotency_key text NOT NULL,
    run_id uuid NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: llm_admissions; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.llm_admissions (
    id bigint NOT NULL,
    queue text NOT NULL,
    concurrency_key text DEFAULT ''::text NOT NULL,
    run_id uuid,
    admitted_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    input bigint DEFAULT 0 NOT NULL,
    output bigint DEFAULT 0 NOT NULL,
    requests integer DEFAULT 1 NOT NULL,
    cost numeric(20,10) DEFAULT 0 NOT NULL,
    settled boolean DEFAULT false NOT NULL,
    batch boolean DEFAULT false NOT NULL,
    request uuid,
    CONSTRAINT llm_admissions_cost_check CHECK ((cost >= (0)::numeric)),
    CONSTRAINT llm_admissions_input_check CHECK ((input >= 0)),
    CONSTRAINT llm_admissions_output_check CHECK ((output >= 0)),
    CONSTRAINT llm_admissions_requests_check CHECK ((requests >= 0))
);

--
-- Name: TABLE llm_admissions; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON TABLE taskd.llm_admissions IS 'LLM calls admitted under a queue''s limits or budget: tokens, requests and dollars reserved before the call (its estimate), trued up with its real usage after it (settled).';

--
-- Name: COLUMN llm_admissions.concurrency_key; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.llm_admissions.concurrency_key IS 'The run''s concurrency key (the tenant a budget is kept per); empty: runs without a key.';

--
-- Name: COLUMN llm_admissions.batch; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.llm_admissions.batch IS 'A Message Batch (requests: its request count): counted by the budgets, not by the token and request limits.';

--
-- Name: COLUMN llm_admissions.request; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.llm_admissions.request IS 'The client''s id of the admission (NULL: none given): asked again, it is found, not reserved twice.';

--
-- Name: llm_admissions_id_seq; Type: SEQUENCE; Schema: taskd; Owner: -
--

ALTER TABLE taskd.llm_admissions ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME taskd.llm_admissions_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: llm_backoffs; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.llm_backoffs (
    model text NOT NULL,
    until timestamp with time zone NOT NULL,
    overloads integer DEFAULT 0 NOT NULL,
    reason text NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: TABLE llm_backoffs; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON TABLE taskd.llm_backoffs IS 'Per model: no daemon starts a call before `until` (from a 429''s retry-after or reset headers, or the adaptive backoff after overload answers).';

--
-- Name: llm_batches; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.llm_batches (
    id bigint NOT NULL,
    batch_id text NOT NULL,
    run_id uuid NOT NULL,
    step text NOT NULL,
    in_step text,
    task_id text NOT NULL,
    attempt integer NOT NULL,
    queue text,
    concurrency_key text,
    tags text[] DEFAULT '{}'::text[] NOT NULL,
    custom_ids text[] NOT NULL,
    models text[] NOT NULL,
    request_count integer NOT NULL,
    status text DEFAULT 'in_progress'::text NOT NULL,
    submitted_at timestamp with time zone DEFAULT now() NOT NULL,
    next_poll_at timestamp with time zone NOT NULL,
    polls integer DEFAULT 0 NOT NULL,
    last_polled_at timestamp with time zone,
    last_error text,
    cancel_requested_at timestamp with time zone,
    ended_at timestamp with time zone,
    results jsonb,
    read_at timestamp with time zone,
    missed_wakes integer DEFAULT 0 NOT NULL,
    admission_id bigint,
    reserved_usd numeric(20,10) DEFAULT 0 NOT NULL,
    finish_failures integer DEFAULT 0 NOT NULL,
    CONSTRAINT llm_batches_check CHECK (((cardinality(custom_ids) = request_count) AND (cardinality(models) = request_count))),
    CONSTRAINT llm_batches_request_count_check CHECK ((request_count > 0)),
    CONSTRAINT llm_batches_reserved_usd_check CHECK ((reserved_usd >= (0)::numeric)),
    CONSTRAINT llm_batches_status_check CHECK ((status = ANY (ARRAY['in_progress'::text, 'canceling'::text, 'ended'::text])))
);

--
-- Name: TABLE llm_batches; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON TABLE taskd.llm_batches IS 'Message Batches submitted by ctx.llm.batch (one per call): the Anthropic batch id, the run and step that submitted it, its requests'' custom ids and models in request order, its processing status, and once ended its results in request order.';

--
-- Name: COLUMN llm_batches.batch_id; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.llm_batches.batch_id IS 'The Anthropic Message Batch id (msgbatch_...).';

--
-- Name: COLUMN llm_batches.step; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.llm_batches.step IS 'The run''s step recording the submission: llm-batch:N (the N-th batch outside ctx.step in an execution) or llm-batch:<step>:N (the N-th inside the ctx.step <step>): a re-execution never submits again.';

--
-- Name: COLUMN llm_batches.in_step; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.llm_batches.in_step IS 'The ctx.step the batch was submitted in (its calls are attributed to it), or NULL.';

--
-- Name: COLUMN llm_batches.next_poll_at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.llm_batches.next_poll_at IS 'No daemon asks the API about the batch before this ([llm] batch_poll_interval apart).';

--
-- Name: COLUMN llm_batches.results; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.llm_batches.results IS 'Once ended: a JSON array in request order, each {custom_id, result} as the API gave it (result.type succeeded, errored, expired or canceled), NUL written as the text \x00; past 128 MiB a result is stored errored (results_too_large).';

--
-- Name: COLUMN llm_batches.read_at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.llm_batches.read_at IS 'When the run first read the ended batch''s results (NULL: not yet).';

--
-- Name: COLUMN llm_batches.admission_id; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.llm_batches.admission_id IS 'Its admission in taskd.llm_admissions (the tenant budget), trued up when the batch ends; NULL: none.';

--
-- Name: COLUMN llm_batches.reserved_usd; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.llm_batches.reserved_usd IS 'The estimated cost reserved at submission (batch prices): counted against the run''s budget while the batch is open, replaced by its calls'' real cost when it ends.';

--
-- Name: COLUMN llm_batches.finish_failures; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.llm_batches.finish_failures IS 'Tries at storing the ended batch that failed (the database refused or was away); at 3 it is written ended, each request errored with the cause (last_error), its results not stored.';

--
-- Name: llm_batches_id_seq; Type: SEQUENCE; Schema: taskd; Owner: -
--

ALTER TABLE taskd.llm_batches ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME taskd.llm_batches_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: llm_calls; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.llm_calls (
    id bigint NOT NULL,
    run_id uuid,
    task_id text NOT NULL,
    attempt integer,
    step text,
    queue text,
    concurrency_key text,
    tags text[] DEFAULT '{}'::text[] NOT NULL,
    model text NOT NULL,
    kind text NOT NULL,
    outcome text NOT NULL,
    input_tokens bigint DEFAULT 0 NOT NULL,
    output_tokens bigint DEFAULT 0 NOT NULL,
    cache_write_tokens bigint DEFAULT 0 NOT NULL,
    cache_read_tokens bigint DEFAULT 0 NOT NULL,
    cost_usd numeric(20,10),
    latency_ms integer,
    stop_reason text,
    request_id text,
    error text,
    started_at timestamp with time zone NOT NULL,
    at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT llm_calls_cache_read_tokens_check CHECK ((cache_read_tokens >= 0)),
    CONSTRAINT llm_calls_cache_write_tokens_check CHECK ((cache_write_tokens >= 0)),
    CONSTRAINT llm_calls_input_tokens_check CHECK ((input_tokens >= 0)),
    CONSTRAINT llm_calls_kind_check CHECK ((kind = ANY (ARRAY['message'::text, 'stream'::text, 'count_tokens'::text, 'batch'::text]))),
    CONSTRAINT llm_calls_output_tokens_check CHECK ((output_tokens >= 0))
);

--
-- Name: TABLE llm_calls; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON TABLE taskd.llm_calls IS 'One row per call made through ctx.llm: tokens, cost (NULL: no price known for the model), outcome (ok, rate_limited, overloaded, server_error, connection_error, refused, budget, abandoned: a stream left before its message ended, canceled: the run canceled, timed out or drained while the call was in flight, its usage unknown).';

--
-- Name: COLUMN llm_calls.cost_usd; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.llm_calls.cost_usd IS 'US dollars at the [llm] prices of the model when the call was recorded (batch: half).';

--
-- Name: llm_calls_id_seq; Type: SEQUENCE; Schema: taskd; Owner: -
--

ALTER TABLE taskd.llm_calls ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME taskd.llm_calls_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: llm_costs_daily; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.llm_costs_daily (
    dimension text NOT NULL,
    day date NOT NULL,
    grp text NOT NULL,
    calls bigint NOT NULL,
    input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL,
    cost_usd numeric NOT NULL,
    cache_write_tokens bigint DEFAULT 0 NOT NULL,
    cache_read_tokens bigint DEFAULT 0 NOT NULL,
    priced_calls bigint DEFAULT 0 NOT NULL,
    unpriced_calls bigint DEFAULT 0 NOT NULL,
    CONSTRAINT llm_costs_daily_dimension_check CHECK ((dimension = ANY (ARRAY['all'::text, 'task'::text, 'key'::text, 'model'::text, 'tag'::text])))
);

--
-- Name: TABLE llm_costs_daily; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON TABLE taskd.llm_costs_daily IS 'taskd.llm_calls summed per dimension (task, key, model, tag; all: every call), UTC day of started_at and group ('''' for no key or no tag); kept by triggers on taskd.llm_calls.';

--
-- Name: COLUMN llm_costs_daily.priced_calls; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.llm_costs_daily.priced_calls IS 'Calls with a price (cost_usd not NULL).';

--
-- Name: COLUMN llm_costs_daily.unpriced_calls; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.llm_costs_daily.unpriced_calls IS 'Calls with tokens but no price (cost_usd NULL).';

--
-- Name: llm_deferrals; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.llm_deferrals (
    run_id uuid NOT NULL,
    since timestamp with time zone DEFAULT now() NOT NULL,
    deferrals integer DEFAULT 1 NOT NULL,
    reason text NOT NULL,
    key text NOT NULL,
    attempt integer NOT NULL,
    request uuid
);

--
-- Name: TABLE llm_deferrals; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON TABLE taskd.llm_deferrals IS 'Runs waiting for the LLM API (429, overload, 5xx, connection), per key (model, count_tokens, message_batches) and attempt: since when, how often. Ended by a success of the key, or by the run''s next attempt.';

--
-- Name: COLUMN llm_deferrals.attempt; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.llm_deferrals.attempt IS 'The run''s attempt that deferred: a deferral of an earlier attempt is over.';

--
-- Name: migrations; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.migrations (
    version integer NOT NULL,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: queue_samples; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.queue_samples (
    at timestamp with time zone NOT NULL,
    queue text NOT NULL,
    due integer NOT NULL,
    delayed integer NOT NULL,
    executing integer NOT NULL,
    oldest_due_age double precision
);

--
-- Name: TABLE queue_samples; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON TABLE taskd.queue_samples IS 'Queue depth once a minute (one daemon of the fleet writes each minute), kept two days: what the console charts.';

--
-- Name: COLUMN queue_samples.at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.queue_samples.at IS 'The minute sampled (its start).';

--
-- Name: COLUMN queue_samples.queue; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.queue_samples.queue IS 'The queue.';

--
-- Name: COLUMN queue_samples.due; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.queue_samples.due IS 'Queued runs due (run_at reached) then.';

--
-- Name: COLUMN queue_samples.delayed; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.queue_samples.delayed IS 'Queued runs not due yet (delayed, retries).';

--
-- Name: COLUMN queue_samples.executing; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.queue_samples.executing IS 'Runs executing (leased) then.';

--
-- Name: COLUMN queue_samples.oldest_due_age; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.queue_samples.oldest_due_age IS 'Seconds the oldest due run had waited then; NULL when none was due.';

--
-- Name: queue_starts; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.queue_starts (
    queue text NOT NULL,
    at timestamp with time zone NOT NULL,
    n integer NOT NULL
);

--
-- Name: queues; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.queues (
    name text NOT NULL,
    concurrency integer,
    concurrency_per_key integer,
    rate_limit integer,
    rate_period double precision,
    paused boolean DEFAULT false NOT NULL,
    declared jsonb DEFAULT '{}'::jsonb NOT NULL,
    overridden boolean DEFAULT false NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    llm_limits jsonb,
    CONSTRAINT queues_check CHECK (((rate_limit IS NULL) = (rate_period IS NULL))),
    CONSTRAINT queues_concurrency_check CHECK ((concurrency >= 1)),
    CONSTRAINT queues_concurrency_per_key_check CHECK ((concurrency_per_key >= 1)),
    CONSTRAINT queues_name_check CHECK (((name <> ''::text) AND (length(name) <= 200))),
    CONSTRAINT queues_rate_limit_check CHECK ((rate_limit >= 1)),
    CONSTRAINT queues_rate_period_check CHECK (((rate_period > (0)::double precision) AND (rate_period <= (86400)::double precision)))
);

--
-- Name: COLUMN queues.llm_limits; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.queues.llm_limits IS 'Limits on the LLM calls of its runs (tokens, input/output tokens, requests per period) and its budget per concurrency key (dollars per period), as the code declares them.';

--
-- Name: run_id_counter; Type: SEQUENCE; Schema: taskd; Owner: -
--

CREATE SEQUENCE taskd.run_id_counter
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    MAXVALUE 4398046511103
    CACHE 1
    CYCLE;

--
-- Name: run_logs; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.run_logs (
    id bigint NOT NULL,
    run_id uuid NOT NULL,
    task_id text NOT NULL,
    attempt integer NOT NULL,
    at timestamp with time zone NOT NULL,
    level text NOT NULL,
    message text NOT NULL,
    fields jsonb,
    CONSTRAINT run_logs_level_check CHECK ((level = ANY (ARRAY['debug'::text, 'info'::text, 'warning'::text, 'error'::text])))
);

--
-- Name: TABLE run_logs; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON TABLE taskd.run_logs IS 'Lines a task logged through ctx.log (at most [log] run_lines per run, at least [log] run_level), deleted with their run.';

--
-- Name: COLUMN run_logs.id; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.run_logs.id IS 'Increasing: orders the lines (taskd logs -f reads past the last one seen).';

--
-- Name: COLUMN run_logs.run_id; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.run_logs.run_id IS 'The run (taskd.runs.id).';

--
-- Name: COLUMN run_logs.task_id; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.run_logs.task_id IS 'The run''s task.';

--
-- Name: COLUMN run_logs.attempt; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.run_logs.attempt IS 'The attempt that logged it.';

--
-- Name: COLUMN run_logs.at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.run_logs.at IS 'When it was logged.';

--
-- Name: COLUMN run_logs.level; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.run_logs.level IS 'debug, info, warning or error.';

--
-- Name: COLUMN run_logs.message; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.run_logs.message IS 'The message.';

--
-- Name: COLUMN run_logs.fields; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.run_logs.fields IS 'The keyword fields given with it, as a JSON object.';

--
-- Name: run_logs_id_seq; Type: SEQUENCE; Schema: taskd; Owner: -
--

ALTER TABLE taskd.run_logs ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME taskd.run_logs_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: run_minutes; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.run_minutes (
    at timestamp with time zone NOT NULL,
    task_id text NOT NULL,
    queue text NOT NULL,
    started integer NOT NULL,
    completed integer NOT NULL,
    failed integer NOT NULL,
    waits jsonb NOT NULL
);

--
-- Name: TABLE run_minutes; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON TABLE taskd.run_minutes IS 'Runs started, completed and failed per minute, per task and queue, per task, per queue and in all (minutes with none have no row), written a minute after the minute ends by the daemon sampling the queues; kept two days.';

--
-- Name: COLUMN run_minutes.at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.run_minutes.at IS 'The minute (its start).';

--
-- Name: COLUMN run_minutes.task_id; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.run_minutes.task_id IS 'The task; '''''' (empty): every task.';

--
-- Name: COLUMN run_minutes.queue; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.run_minutes.queue IS 'The queue; '''''' (empty): every queue.';

--
-- Name: COLUMN run_minutes.started; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.run_minutes.started IS 'Runs whose latest attempt started in the minute.';

--
-- Name: COLUMN run_minutes.completed; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.run_minutes.completed IS 'Runs that completed in the minute.';

--
-- Name: COLUMN run_minutes.failed; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.run_minutes.failed IS 'Runs that failed in the minute.';

--
-- Name: COLUMN run_minutes.waits; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.run_minutes.waits IS 'The started runs'' waits from run_at to start, as a histogram: {"i": count}, i the width_bucket of the wait in seconds over the bounds 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400.';

--
-- Name: schedules; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.schedules (
    id text NOT NULL,
    task_id text NOT NULL,
    cron text NOT NULL,
    timezone text DEFAULT 'UTC'::text NOT NULL,
    payload jsonb,
    external_id text,
    dedup_key text,
    catch_up text DEFAULT 'latest'::text NOT NULL,
    declared boolean DEFAULT false NOT NULL,
    active boolean DEFAULT true NOT NULL,
    last_fired_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT schedules_catch_up_check CHECK ((catch_up = ANY (ARRAY['latest'::text, 'all'::text, 'none'::text])))
);

--
-- Name: TABLE schedules; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON TABLE taskd.schedules IS 'Cron schedules: declared in code (@schedules.task) or created at run time (client, SQL, API, CLI).';

--
-- Name: COLUMN schedules.id; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.schedules.id IS 'The schedule id: the task id for a declared schedule, sched_<32 hex digits> for a created one.';

--
-- Name: COLUMN schedules.task_id; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.schedules.task_id IS 'The task it fires.';

--
-- Name: COLUMN schedules.cron; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.schedules.cron IS 'The cron expression: 5 fields, 6 with seconds first, or a shorthand such as @daily.';

--
-- Name: COLUMN schedules.timezone; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.schedules.timezone IS 'The IANA timezone the cron is read in.';

--
-- Name: COLUMN schedules.payload; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.schedules.payload IS 'Extra data every run it fires gets (ScheduledRun.payload).';

--
-- Name: COLUMN schedules.external_id; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.schedules.external_id IS 'The creator''s own reference (a user id...), in every run''s payload.';

--
-- Name: COLUMN schedules.dedup_key; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.schedules.dedup_key IS 'Creating again with this key updates the schedule instead of adding one.';

--
-- Name: COLUMN schedules.catch_up; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.schedules.catch_up IS 'Fire times missed by more than 60 s: latest (one run), all (one per time, the latest 100), none.';

--
-- Name: COLUMN schedules.declared; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.schedules.declared IS 'Declared in code (synced at each daemon start; deactivated when removed from the code).';

--
-- Name: COLUMN schedules.active; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.schedules.active IS 'false: paused, it fires nothing.';

--
-- Name: COLUMN schedules.last_fired_at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.schedules.last_fired_at IS 'The latest fire time that got its run.';

--
-- Name: COLUMN schedules.created_at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.schedules.created_at IS 'When it was created.';

--
-- Name: COLUMN schedules.updated_at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.schedules.updated_at IS 'When it was last changed.';

--
-- Name: settings; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.settings (
    key text NOT NULL,
    value jsonb NOT NULL
);

--
-- Name: stats_minutes; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.stats_minutes (
    at timestamp with time zone NOT NULL,
    rolled_up_to timestamp with time zone NOT NULL
);

--
-- Name: TABLE stats_minutes; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON TABLE taskd.stats_minutes IS 'The minutes sampled for the console''s charts: one row each, inserted by the one daemon that writes the minute (kept two days).';

--
-- Name: COLUMN stats_minutes.at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.stats_minutes.at IS 'The minute sampled (its start).';

--
-- Name: COLUMN stats_minutes.rolled_up_to; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.stats_minutes.rolled_up_to IS 'taskd.run_minutes holds every minute before this one (written with this minute).';

--
-- Name: steps; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.steps (
    run_id uuid NOT NULL,
    name text NOT NULL,
    status text NOT NULL,
    result jsonb,
    error jsonb,
    attempts integer NOT NULL,
    run_attempt integer NOT NULL,
    started_at timestamp with time zone NOT NULL,
    finished_at timestamp with time zone NOT NULL,
    CONSTRAINT steps_status_check CHECK ((status = ANY (ARRAY['completed'::text, 'failed'::text])))
);

--
-- Name: TABLE steps; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON TABLE taskd.steps IS 'Durable steps (ctx.step): a step''s result, recorded once per run and returned without calling the step when the run executes again.';

--
-- Name: COLUMN steps.run_id; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.steps.run_id IS 'The run (taskd.runs.id).';

--
-- Name: COLUMN steps.name; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.steps.name IS 'The step''s name, unique within its run (waits are wait:1, wait:2...; tokens token:N; child runs children:N).';

--
-- Name: COLUMN steps.status; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.steps.status IS 'completed, or failed (its tries exhausted: called again by the next attempt, unless its error type is StepResultNotStored).';

--
-- Name: COLUMN steps.result; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.steps.result IS 'What the step''s function returned, as JSON.';

--
-- Name: COLUMN steps.error; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.steps.error IS 'The last try''s error: {"type": ..., "message": ...}.';

--
-- Name: COLUMN steps.attempts; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.steps.attempts IS 'Calls of the step''s function so far (its own retries, over the run''s attempts).';

--
-- Name: COLUMN steps.run_attempt; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.steps.run_attempt IS 'The run''s attempt that recorded it.';

--
-- Name: COLUMN steps.started_at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.steps.started_at IS 'When its first call started.';

--
-- Name: COLUMN steps.finished_at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.steps.finished_at IS 'When it was recorded.';

--
-- Name: subscriptions; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.subscriptions (
    event_name text NOT NULL,
    task_id text NOT NULL
);

--
-- Name: tasks; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.tasks (
    id text NOT NULL,
    queue text NOT NULL,
    max_attempts integer NOT NULL,
    settings jsonb DEFAULT '{}'::jsonb NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    last_served_at timestamp with time zone
);

--
-- Name: workers; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.workers (
    id uuid NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    version text NOT NULL,
    concurrency integer NOT NULL,
    queues text[] DEFAULT '{}'::text[] NOT NULL,
    tasks text[] DEFAULT '{}'::text[] NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    heartbeat_at timestamp with time zone DEFAULT now() NOT NULL,
    stopped_at timestamp with time zone,
    lock_key bigint NOT NULL,
    last_report jsonb,
    process jsonb,
    task_versions text[],
    version_policy text
);

--
-- Name: TABLE workers; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON TABLE taskd.workers IS 'One row per daemon process started; rows of stopped workers are deleted after [retention] workers.';

--
-- Name: COLUMN workers.id; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.workers.id IS 'Random per process start.';

--
-- Name: COLUMN workers.host; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.workers.host IS 'The host name of its machine.';

--
-- Name: COLUMN workers.pid; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.workers.pid IS 'Its process id.';

--
-- Name: COLUMN workers.version; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.workers.version IS 'Its taskd version.';

--
-- Name: COLUMN workers.concurrency; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.workers.concurrency IS 'Most runs it executes at once ([worker] concurrency).';

--
-- Name: COLUMN workers.queues; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.workers.queues IS 'The queues it claims from (empty: every queue).';

--
-- Name: COLUMN workers.tasks; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.workers.tasks IS 'The task ids it serves.';

--
-- Name: COLUMN workers.started_at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.workers.started_at IS 'When it started.';

--
-- Name: COLUMN workers.heartbeat_at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.workers.heartbeat_at IS 'Its latest heartbeat.';

--
-- Name: COLUMN workers.stopped_at; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.workers.stopped_at IS 'Set on a clean stop, or when it was found gone; NULL while it lives.';

--
-- Name: COLUMN workers.lock_key; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.workers.lock_key IS 'The advisory lock it holds for its whole life: free means the worker is gone.';

--
-- Name: COLUMN workers.last_report; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.workers.last_report IS 'What its start-up reconciliation or its last rescue found (Health.workers[].last_report).';

--
-- Name: COLUMN workers.process; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.workers.process IS 'Which process it is (boot id, pid namespace, pid, start time), to prove it exited; NULL: not recorded.';

--
-- Name: COLUMN workers.task_versions; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.workers.task_versions IS 'The version this worker serves of each of its tasks, in the order of tasks.';

--
-- Name: COLUMN workers.version_policy; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.workers.version_policy IS 'Its [worker] version_policy: pinned (runs with recorded steps only at their version) or latest (any version).';

--
-- Name: task_service; Type: VIEW; Schema: taskd; Owner: -
--

CREATE VIEW taskd.task_service AS
 SELECT task_id,
    bool_or(live) AS live,
    max(served_until) AS served_until
   FROM ( SELECT unnest(w.tasks) AS task_id,
            (w.stopped_at IS NULL) AS live,
            w.stopped_at AS served_until
           FROM taskd.workers w
        UNION ALL
         SELECT t.id,
            false,
            GREATEST(t.last_served_at, t.updated_at) AS "greatest"
           FROM taskd.tasks t) s
  GROUP BY task_id;

--
-- Name: wait_tokens; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.wait_tokens (
    id uuid NOT NULL,
    run_id uuid NOT NULL,
    status text DEFAULT 'pending'::text NOT NULL,
    data jsonb,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    completed_at timestamp with time zone,
    unseen boolean DEFAULT false NOT NULL,
    awaited boolean DEFAULT false NOT NULL,
    CONSTRAINT wait_tokens_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'completed'::text, 'timed_out'::text])))
);

--
-- Name: webhook_deliveries; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.webhook_deliveries (
    id uuid DEFAULT taskd.new_run_id() NOT NULL,
    subscription_id uuid NOT NULL,
    run_id uuid NOT NULL,
    seq integer NOT NULL,
    event text NOT NULL,
    payload jsonb NOT NULL,
    status text DEFAULT 'pending'::text NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    last_status integer,
    last_error text,
    delivery_run_id uuid,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    delivered_at timestamp with time zone,
    CONSTRAINT webhook_deliveries_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'sending'::text, 'delivered'::text, 'dead'::text])))
);

--
-- Name: TABLE webhook_deliveries; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON TABLE taskd.webhook_deliveries IS 'One row per run event and subscription; its id is the webhook-id header (stable across retries).';

--
-- Name: COLUMN webhook_deliveries.seq; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.webhook_deliveries.seq IS 'Its place among the events of one (subscription, run): sent in this order.';

--
-- Name: COLUMN webhook_deliveries.payload; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.webhook_deliveries.payload IS 'The JSON body: the run''s state when the event happened (taskd.webhook_payload).';

--
-- Name: COLUMN webhook_deliveries.status; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.webhook_deliveries.status IS 'pending (waiting for the delivery before it), sending (its run is queued or executing), delivered, dead (its last try failed: redeliverable).';

--
-- Name: COLUMN webhook_deliveries.delivery_run_id; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.webhook_deliveries.delivery_run_id IS 'The run of taskd.webhook sending it (the latest, after a redelivery).';

--
-- Name: webhook_subscriptions; Type: TABLE; Schema: taskd; Owner: -
--

CREATE TABLE taskd.webhook_subscriptions (
    id uuid DEFAULT taskd.new_run_id() NOT NULL,
    name text NOT NULL,
    url text NOT NULL,
    events text[] NOT NULL,
    tasks text[],
    queues text[],
    tags text[],
    secret text NOT NULL,
    previous_secret text,
    previous_secret_expires_at timestamp with time zone,
    source text DEFAULT 'api'::text NOT NULL,
    enabled boolean DEFAULT true NOT NULL,
    paused boolean DEFAULT false NOT NULL,
    disabled_reason text,
    failing_since timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT webhook_subscriptions_events_check CHECK (((cardinality(events) > 0) AND (events <@ ARRAY['run.started'::text, 'run.completed'::text, 'run.failed'::text, 'run.canceled'::text, 'run.expired'::text, 'run.attempt_failed'::text, 'run.waiting'::text]))),
    CONSTRAINT webhook_subscriptions_name_check CHECK ((name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$'::text)),
    CONSTRAINT webhook_subscriptions_source_check CHECK ((source = ANY (ARRAY['config'::text, 'api'::text]))),
    CONSTRAINT webhook_subscriptions_url_check CHECK ((url ~ '^https?://'::text))
);

--
-- Name: TABLE webhook_subscriptions; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON TABLE taskd.webhook_subscriptions IS 'Outbound status webhooks: where run events are POSTed, signed per Standard Webhooks.';

--
-- Name: COLUMN webhook_subscriptions.events; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.webhook_subscriptions.events IS 'The run events sent: run.started, run.completed, run.failed, run.canceled, run.expired, run.attempt_failed, run.waiting.';

--
-- Name: COLUMN webhook_subscriptions.tasks; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.webhook_subscriptions.tasks IS 'Only runs of these tasks (NULL: all).';

--
-- Name: COLUMN webhook_subscriptions.queues; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.webhook_subscriptions.queues IS 'Only runs in these queues (NULL: all).';

--
-- Name: COLUMN webhook_subscriptions.tags; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.webhook_subscriptions.tags IS 'Only runs with one of these tags (NULL: all).';

--
-- Name: COLUMN webhook_subscriptions.secret; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.webhook_subscriptions.secret IS 'The signing secret (whsec_ + base64); previous_secret signs too until previous_secret_expires_at (rotation).';

--
-- Name: COLUMN webhook_subscriptions.enabled; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.webhook_subscriptions.enabled IS 'false: disabled (disabled_reason says why: failing for [webhook_delivery] disable_after, a 410 Gone, the config); no events are captured.';

--
-- Name: COLUMN webhook_subscriptions.failing_since; Type: COMMENT; Schema: taskd; Owner: -
--

COMMENT ON COLUMN taskd.webhook_subscriptions.failing_since IS 'The first failed attempt since the last success (NULL: not failing).';

--
-- Name: attempts attempts_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.attempts
    ADD CONSTRAINT attempts_pkey PRIMARY KEY (run_id, attempt);

--
-- Name: events events_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.events
    ADD CONSTRAINT events_pkey PRIMARY KEY (id);

--
-- Name: failure_hooks failure_hooks_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.failure_hooks
    ADD CONSTRAINT failure_hooks_pkey PRIMARY KEY (run_id);

--
-- Name: idempotency_keys idempotency_keys_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.idempotency_keys
    ADD CONSTRAINT idempotency_keys_pkey PRIMARY KEY (task_id, idempotency_key);

--
-- Name: llm_admissions llm_admissions_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.llm_admissions
    ADD CONSTRAINT llm_admissions_pkey PRIMARY KEY (id);

--
-- Name: llm_backoffs llm_backoffs_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.llm_backoffs
    ADD CONSTRAINT llm_backoffs_pkey PRIMARY KEY (model);

--
-- Name: llm_batches llm_batches_batch_id_key; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.llm_batches
    ADD CONSTRAINT llm_batches_batch_id_key UNIQUE (batch_id);

--
-- Name: llm_batches llm_batches_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.llm_batches
    ADD CONSTRAINT llm_batches_pkey PRIMARY KEY (id);

--
-- Name: llm_calls llm_calls_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.llm_calls
    ADD CONSTRAINT llm_calls_pkey PRIMARY KEY (id);

--
-- Name: llm_costs_daily llm_costs_daily_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.llm_costs_daily
    ADD CONSTRAINT llm_costs_daily_pkey PRIMARY KEY (dimension, day, grp);

--
-- Name: llm_deferrals llm_deferrals_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.llm_deferrals
    ADD CONSTRAINT llm_deferrals_pkey PRIMARY KEY (run_id, key);

--
-- Name: migrations migrations_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.migrations
    ADD CONSTRAINT migrations_pkey PRIMARY KEY (version);

--
-- Name: queue_samples queue_samples_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.queue_samples
    ADD CONSTRAINT queue_samples_pkey PRIMARY KEY (at, queue);

--
-- Name: queues queues_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.queues
    ADD CONSTRAINT queues_pkey PRIMARY KEY (name);

--
-- Name: run_logs run_logs_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.run_logs
    ADD CONSTRAINT run_logs_pkey PRIMARY KEY (id);

--
-- Name: run_minutes run_minutes_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.run_minutes
    ADD CONSTRAINT run_minutes_pkey PRIMARY KEY (task_id, queue, at);

--
-- Name: runs runs_max_duration_positive; Type: CHECK CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE taskd.runs
    ADD CONSTRAINT runs_max_duration_positive CHECK (((max_duration IS NULL) OR (max_duration > (0)::double precision))) NOT VALID;

--
-- Name: runs runs_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.runs
    ADD CONSTRAINT runs_pkey PRIMARY KEY (id);

--
-- Name: runs runs_queue_name_length; Type: CHECK CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE taskd.runs
    ADD CONSTRAINT runs_queue_name_length CHECK (((queue <> ''::text) AND (length(queue) <= 200))) NOT VALID;

--
-- Name: runs runs_retry_object; Type: CHECK CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE taskd.runs
    ADD CONSTRAINT runs_retry_object CHECK (((retry IS NULL) OR (jsonb_typeof(retry) = 'object'::text))) NOT VALID;

--
-- Name: schedules schedules_dedup_key_key; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.schedules
    ADD CONSTRAINT schedules_dedup_key_key UNIQUE (dedup_key);

--
-- Name: schedules schedules_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.schedules
    ADD CONSTRAINT schedules_pkey PRIMARY KEY (id);

--
-- Name: settings settings_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.settings
    ADD CONSTRAINT settings_pkey PRIMARY KEY (key);

--
-- Name: stats_minutes stats_minutes_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.stats_minutes
    ADD CONSTRAINT stats_minutes_pkey PRIMARY KEY (at);

--
-- Name: steps steps_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.steps
    ADD CONSTRAINT steps_pkey PRIMARY KEY (run_id, name);

--
-- Name: subscriptions subscriptions_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.subscriptions
    ADD CONSTRAINT subscriptions_pkey PRIMARY KEY (event_name, task_id);

--
-- Name: tasks tasks_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.tasks
    ADD CONSTRAINT tasks_pkey PRIMARY KEY (id);

--
-- Name: wait_tokens wait_tokens_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.wait_tokens
    ADD CONSTRAINT wait_tokens_pkey PRIMARY KEY (id);

--
-- Name: webhook_deliveries webhook_deliveries_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.webhook_deliveries
    ADD CONSTRAINT webhook_deliveries_pkey PRIMARY KEY (id);

--
-- Name: webhook_deliveries webhook_deliveries_subscription_id_run_id_seq_key; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.webhook_deliveries
    ADD CONSTRAINT webhook_deliveries_subscription_id_run_id_seq_key UNIQUE (subscription_id, run_id, seq);

--
-- Name: webhook_subscriptions webhook_subscriptions_name_key; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.webhook_subscriptions
    ADD CONSTRAINT webhook_subscriptions_name_key UNIQUE (name);

--
-- Name: webhook_subscriptions webhook_subscriptions_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.webhook_subscriptions
    ADD CONSTRAINT webhook_subscriptions_pkey PRIMARY KEY (id);

--
-- Name: workers workers_pkey; Type: CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.workers
    ADD CONSTRAINT workers_pkey PRIMARY KEY (id);

--
-- Name: attempts_failed_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX attempts_failed_idx ON taskd.attempts USING btree (finished_at, fingerprint, run_id) WHERE (fingerprint IS NOT NULL);

--
-- Name: attempts_fingerprint_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX attempts_fingerprint_idx ON taskd.attempts USING btree (fingerprint, run_id DESC) WHERE (fingerprint IS NOT NULL);

--
-- Name: events_name_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX events_name_idx ON taskd.events USING btree (name, id DESC);

--
-- Name: idempotency_keys_expiry_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX idempotency_keys_expiry_idx ON taskd.idempotency_keys USING btree (expires_at);

--
-- Name: llm_admissions_at_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX llm_admissions_at_idx ON taskd.llm_admissions USING btree (admitted_at);

--
-- Name: llm_admissions_key_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX llm_admissions_key_idx ON taskd.llm_admissions USING btree (queue, concurrency_key, admitted_at);

--
-- Name: llm_admissions_queue_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX llm_admissions_queue_idx ON taskd.llm_admissions USING btree (queue, admitted_at);

--
-- Name: llm_admissions_request_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE UNIQUE INDEX llm_admissions_request_idx ON taskd.llm_admissions USING btree (request) WHERE (request IS NOT NULL);

--
-- Name: llm_batches_open_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX llm_batches_open_idx ON taskd.llm_batches USING btree (next_poll_at) WHERE (status <> 'ended'::text);

--
-- Name: llm_batches_run_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX llm_batches_run_idx ON taskd.llm_batches USING btree (run_id);

--
-- Name: llm_batches_unread_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX llm_batches_unread_idx ON taskd.llm_batches USING btree (run_id) WHERE ((status = 'ended'::text) AND (read_at IS NULL));

--
-- Name: llm_calls_empty_tag_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX llm_calls_empty_tag_idx ON taskd.llm_calls USING btree (started_at) WHERE (''::text = ANY (tags));

--
-- Name: llm_calls_key_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX llm_calls_key_idx ON taskd.llm_calls USING btree (concurrency_key, started_at) WHERE (concurrency_key IS NOT NULL);

--
-- Name: llm_calls_run_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX llm_calls_run_idx ON taskd.llm_calls USING btree (run_id, id);

--
-- Name: llm_calls_started_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX llm_calls_started_idx ON taskd.llm_calls USING btree (started_at);

--
-- Name: queue_starts_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX queue_starts_idx ON taskd.queue_starts USING btree (queue, at);

--
-- Name: run_logs_run_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX run_logs_run_idx ON taskd.run_logs USING btree (run_id, id);

--
-- Name: run_minutes_at_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX run_minutes_at_idx ON taskd.run_minutes USING btree (at);

--
-- Name: runs_claim_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX runs_claim_idx ON taskd.runs USING btree (queue, concurrency_key, priority DESC, run_at, id) WHERE (status = 'queued'::text);

--
-- Name: runs_event_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX runs_event_idx ON taskd.runs USING btree (event_id) WHERE (event_id IS NOT NULL);

--
-- Name: runs_expiry_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX runs_expiry_idx ON taskd.runs USING btree (expires_at) WHERE ((status = 'queued'::text) AND (expires_at IS NOT NULL));

--
-- Name: runs_lease_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX runs_lease_idx ON taskd.runs USING btree (queue, concurrency_key, lease_expires_at) WHERE (lease_expires_at IS NOT NULL);

--
-- Name: runs_parent_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX runs_parent_idx ON taskd.runs USING btree (parent_id, id) WHERE (parent_id IS NOT NULL);

--
-- Name: runs_schedule_fire_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE UNIQUE INDEX runs_schedule_fire_idx ON taskd.runs USING btree (schedule_id, scheduled_for) WHERE (schedule_id IS NOT NULL);

--
-- Name: runs_tags_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX runs_tags_idx ON taskd.runs USING gin (tags) WHERE (tags <> '{}'::text[]);

--
-- Name: runs_task_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX runs_task_idx ON taskd.runs USING btree (task_id, id DESC);

--
-- Name: runs_unfinished_children_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX runs_unfinished_children_idx ON taskd.runs USING btree (parent_id) WHERE ((parent_id IS NOT NULL) AND (status <> ALL (ARRAY['completed'::text, 'failed'::text, 'canceled'::text, 'expired'::text])));

--
-- Name: runs_versioned_queue_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX runs_versioned_queue_idx ON taskd.runs USING btree (run_at) WHERE ((status = 'queued'::text) AND (version IS NOT NULL));

--
-- Name: runs_waiting_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX runs_waiting_idx ON taskd.runs USING btree (run_at) WHERE (status = 'waiting'::text);

--
-- Name: schedules_task_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX schedules_task_idx ON taskd.schedules USING btree (task_id);

--
-- Name: wait_tokens_run_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX wait_tokens_run_idx ON taskd.wait_tokens USING btree (run_id);

--
-- Name: wait_tokens_unseen_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX wait_tokens_unseen_idx ON taskd.wait_tokens USING btree (run_id) WHERE unseen;

--
-- Name: webhook_deliveries_open_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX webhook_deliveries_open_idx ON taskd.webhook_deliveries USING btree (subscription_id, run_id, seq) WHERE (status = ANY (ARRAY['pending'::text, 'sending'::text]));

--
-- Name: webhook_deliveries_run_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX webhook_deliveries_run_idx ON taskd.webhook_deliveries USING btree (delivery_run_id) WHERE (delivery_run_id IS NOT NULL);

--
-- Name: webhook_deliveries_sub_idx; Type: INDEX; Schema: taskd; Owner: -
--

CREATE INDEX webhook_deliveries_sub_idx ON taskd.webhook_deliveries USING btree (subscription_id, id);

--
-- Name: llm_calls llm_costs_daily_add; Type: TRIGGER; Schema: taskd; Owner: -
--

CREATE TRIGGER llm_costs_daily_add AFTER INSERT ON taskd.llm_calls REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION taskd.llm_costs_daily_add();

--
-- Name: llm_calls llm_costs_daily_remove; Type: TRIGGER; Schema: taskd; Owner: -
--

CREATE TRIGGER llm_costs_daily_remove AFTER DELETE ON taskd.llm_calls REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION taskd.llm_costs_daily_remove();

--
-- Name: llm_calls llm_costs_daily_update_1_remove; Type: TRIGGER; Schema: taskd; Owner: -
--

CREATE TRIGGER llm_costs_daily_update_1_remove AFTER UPDATE ON taskd.llm_calls REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION taskd.llm_costs_daily_remove();

--
-- Name: llm_calls llm_costs_daily_update_2_add; Type: TRIGGER; Schema: taskd; Owner: -
--

CREATE TRIGGER llm_costs_daily_update_2_add AFTER UPDATE ON taskd.llm_calls REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION taskd.llm_costs_daily_add();

--
-- Name: runs webhook_capture; Type: TRIGGER; Schema: taskd; Owner: -
--

CREATE TRIGGER webhook_capture AFTER UPDATE ON taskd.runs REFERENCING OLD TABLE AS changed_old NEW TABLE AS changed_new FOR EACH STATEMENT EXECUTE FUNCTION taskd.webhook_capture();

--
-- Name: runs webhook_delivery_ended; Type: TRIGGER; Schema: taskd; Owner: -
--

CREATE TRIGGER webhook_delivery_ended AFTER UPDATE OF status ON taskd.runs FOR EACH ROW WHEN (((new.task_id = 'taskd.webhook'::text) AND (old.status IS DISTINCT FROM new.status) AND (new.status = ANY (ARRAY['completed'::text, 'failed'::text, 'canceled'::text, 'expired'::text])))) EXECUTE FUNCTION taskd.webhook_delivery_ended();

--
-- Name: llm_batches llm_batches_run_id_fkey; Type: FK CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.llm_batches
    ADD CONSTRAINT llm_batches_run_id_fkey FOREIGN KEY (run_id) REFERENCES taskd.runs(id) ON DELETE CASCADE;

--
-- Name: llm_deferrals llm_deferrals_run_id_fkey; Type: FK CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.llm_deferrals
    ADD CONSTRAINT llm_deferrals_run_id_fkey FOREIGN KEY (run_id) REFERENCES taskd.runs(id) ON DELETE CASCADE;

--
-- Name: webhook_deliveries webhook_deliveries_subscription_id_fkey; Type: FK CONSTRAINT; Schema: taskd; Owner: -
--

ALTER TABLE ONLY taskd.webhook_deliveries
    ADD CONSTRAINT webhook_deliveries_subscription_id_fkey FOREIGN KEY (subscription_id) REFERENCES taskd.webhook_subscriptions(id) ON DELETE CASCADE;
