-- Status webhooks are captured once per statement, not once per row (issue 18's drain).
--
-- 0018's capture was a row trigger: every status change of a run called its plpgsql function,
-- which looked for an enabled subscription before returning, twice per run (the claim, the
-- outcome) even with no subscription at all: 2-4.5 us of the database's CPU each, a tenth of
-- a no-op run's cost. Now one statement-level trigger with transition tables looks once per
-- UPDATE statement of taskd.runs (a claim of 100 runs: one look for 100 status changes) and,
-- only while a subscription is enabled, reads the changed rows and captures each status
-- change exactly as 0018 did (the same events, payloads, filters and per-(subscription, run)
-- chain: the loop's body is 0018's row body).
--
-- A trigger with transition tables cannot name columns (UPDATE OF status): it fires for
-- every UPDATE of taskd.runs (heartbeats, metadata, ...). Those keep each updated row's two
-- images in memory until the statement ends (work_mem, then temporary files) and pay the
-- same one look; where no status changed nothing is captured.
DROP TRIGGER webhook_capture ON taskd.runs;

-- An UPDATE of taskd.runs ended: each run whose status it changed, one delivery per matching
-- subscription (0018's row body, run by run).
-- The planner settings are the function's own: called inside taskd.claim_runs, the join of the
-- two transition tables would otherwise be planned under the claim's settings (hash and merge
-- joins off: a nested loop over the claim's rows squared). A join, not an object built over
-- the statement's rows: only the rows whose status changed are read, and an UPDATE of millions
-- of runs (an operator's backfill) is not bounded by one value's size (jsonb stops at 256 MB).
CREATE OR REPLACE FUNCTION taskd.webhook_capture() RETURNS trigger
    LANGUAGE plpgsql
    SET enable_hashjoin = on SET enable_mergejoin = on SET enable_seqscan = on
    SET enable_sort = on SET enable_bitmapscan = on
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

COMMENT ON FUNCTION taskd.webhook_capture() IS
    'Statement trigger on taskd.runs: returns at once while no status-webhook subscription is enabled.';

CREATE TRIGGER webhook_capture AFTER UPDATE ON taskd.runs
    REFERENCING OLD TABLE AS changed_old NEW TABLE AS changed_new
    FOR EACH STATEMENT
    EXECUTE FUNCTION taskd.webhook_capture();
