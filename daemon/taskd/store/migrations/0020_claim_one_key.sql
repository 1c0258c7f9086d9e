-- taskd.claim_runs claims from the only queue and key in one statement (issue 18: a run
-- triggered at idle waits for the claim).
--
-- When one queue and one key hold every queued run, and that queue has no limit and is not
-- paused, the claim's loop (find the queues with queued runs, their settings, each queue's
-- keys, then pick) can only end one way: every free slot goes to that key's due runs, in
-- priority order, with nothing held back. One statement now finds that out (two probes of
-- runs_claim_idx, the lowest and highest queued (queue, key), and the queue's row) and one
-- claims; anything else goes through the loop as before. A plpgsql function's statements are
-- set up again in each transaction that calls it, and every claim is its own transaction:
-- measured with bench/claim_parts.py, a claim of one run took 0.43 ms in the server and now
-- 0.35 (the same pick-and-update as a plain statement: 0.29). With nothing queued at all the
-- guard returns at once, before the loop's queue scan.
--
-- The function is the one of 0017_versions.sql with that block added after its first check;
-- its settings (the pinned plans, no JIT) are repeated, as CREATE OR REPLACE replaces them.
CREATE OR REPLACE FUNCTION taskd.claim_runs(task_ids text[], queues text[], max_runs int, worker uuid,
                                 lease_seconds float8, queue_after text DEFAULT NULL,
                                 key_after jsonb DEFAULT '{}', task_versions text[] DEFAULT NULL,
                                 pinned boolean DEFAULT true)
RETURNS TABLE (id uuid, task_id text, payload jsonb, attempt int, max_attempts int,
               queue text, tags text[], metadata jsonb, log_lines bigint,
               concurrency_key text, held_back boolean, retry_in float8, cursors jsonb,
               run_retry jsonb, run_max_duration float8)
LANGUAGE plpgsql VOLATILE
-- A function so that its plans can be pinned. Right after a burst of enqueues the table has no
-- statistics yet, and the planner would bitmap-scan and sort the whole backlog on every claim;
-- the only plans left here are ordered scans of runs_claim_idx, which stop at the limit
-- whatever the backlog or the history. The picked runs are joined back by primary key one by
-- one (the planner cannot know how many a LIMIT per key gives and would hash-join them
-- against a scan of the whole table); the CTE fences the LIMIT, so no more rows are updated
-- than were picked. Generic plans: each statement is planned once per connection, not at every
-- claim (planning was most of the cost of claiming one run); the settings leave one plan for
-- each. No JIT: the disabled plan nodes' costs (10^10) pass any jit_above_cost, and on a
-- server built with LLVM (PostgreSQL 12-17 as distributions ship them) every statement was
-- compiled: a claim of 100 took 7.5-8.2 s on Debian's 15, 8-48 ms without.
SET enable_bitmapscan = off SET enable_seqscan = off SET enable_sort = off
SET enable_hashjoin = off SET enable_mergejoin = off SET plan_cache_mode = force_generic_plan
SET jit = off
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
