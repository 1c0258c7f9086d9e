-- Waits and tokens under pressure (issue 12).
--   * A completed token wakes only the run waiting on it: wait.for_token marks the token
--     `awaited` by its run, and only an awaited token's completion queues a waiting run (a run
--     suspended on a timer or on children is left to sleep; it reads the data when it reaches
--     for_token).
--   * A token past its timeout can no longer be completed, even before its run replays.
--   * Token data has the payload size cap; tokens are pruned with their runs (queries.sql) and
--     `unseen` is cleared once nothing will read it.
--   * The per-run log cap counts the lines of every earlier execution of a run, resumes and
--     drains included (claim_runs).

ALTER TABLE taskd.wait_tokens ADD COLUMN awaited boolean NOT NULL DEFAULT false;
-- Runs the previous version suspended in wait.for_token: their pending tokens are awaited, or
-- completing them would leave the run asleep until the timeout. (A run waiting on a timer or
-- on children with a pending token gets one early replay at most when it is completed.)
UPDATE taskd.wait_tokens t SET awaited = true
  FROM taskd.runs r
 WHERE r.id = t.run_id AND r.status = 'waiting' AND t.status = 'pending';

-- Tokens of runs pruned before: nothing can read them any more.
DELETE FROM taskd.wait_tokens t WHERE NOT EXISTS (SELECT FROM taskd.runs r WHERE r.id = t.run_id);
UPDATE taskd.wait_tokens t SET unseen = false
 WHERE t.unseen
   AND NOT EXISTS (SELECT FROM taskd.runs r
                    WHERE r.id = t.run_id AND r.status IN ('queued', 'executing', 'waiting'));
-- A waiting run with an unseen token: the wake loop of the previous version would have queued
-- it (it may be waiting on that token: its completion raced with its suspension). Queue it
-- once; a run waiting on something else suspends again, and is not woken by that token again.
UPDATE taskd.runs r SET status = 'queued', run_at = now()
 WHERE r.status = 'waiting'
   AND EXISTS (SELECT FROM taskd.wait_tokens t WHERE t.run_id = r.id AND t.unseen);

-- taskd.complete_token(id, data) -> 'completed'. Records the data and queues the run waiting
-- on the token. SQLSTATE TD404: no such token; TD409: already completed, or timed out (its
-- timeout has passed, whether or not its run has seen it yet); program_limit_exceeded: data
-- over the payload limit (taskd.settings max_payload_bytes, as taskd.trigger).
CREATE OR REPLACE FUNCTION taskd.complete_token(token_id uuid, token_data jsonb DEFAULT 'null')
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

-- taskd.claim_runs as in 0010, but for one change: log_lines (the lines the run stored so far,
-- for the per-run cap) is counted for every run that started before, not only from its second
-- attempt on (a resume after a wait, or a drain, gives the attempt back).
CREATE OR REPLACE FUNCTION taskd.claim_runs(task_ids text[], queues text[], max_runs int, worker uuid,
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
