-- Status webhooks are captured once per statement, not once per row (issue 18's drain).
--
-- 0018's capture was a row trigger: every status change of a run called its plpgsql function,
-- which looked for an enabled subscription before returning, twice per run (the claim, the
-- outcome) even with no subscription at all: 2-4.5 us of the database's CPU each, a tenth of
-- a no-op run's cost. Now one statement-level trigger with transition tables looks once per
-- UPDATE statement of taskd.runs (a claim of 100 runs: one look for 100 status changes) and,
-- only while a subscription is enabled, reads the changed rows and captures each status
-- change exactly as 0018 did (the same events, payloads, filters and per-(subscription, run)
-- chain: taskd.webhook_capture_run holds 0018's row body unchanged).
--
-- A trigger with transition tables cannot name columns (UPDATE OF status): it fires for
-- every UPDATE of taskd.runs (heartbeats, metadata, ...). Those keep each updated row's two
-- images in memory until the statement ends (work_mem, then temporary files) and pay the
-- same one look; where no status changed nothing is captured.
DROP TRIGGER webhook_capture ON taskd.runs;

-- 0018's row body: one run's status change (from old_status, old_attempt) to its events.
CREATE FUNCTION taskd.webhook_capture_run(run taskd.runs, old_status text, old_attempt int)
    RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    event text;
    body jsonb;
    sub record;
    delivery uuid;
BEGIN
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
    IF event IS NULL THEN
        RETURN;
    END IF;
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
END
$$;

COMMENT ON FUNCTION taskd.webhook_capture_run(taskd.runs, text, int) IS
    'One run''s status change to its status-webhook deliveries (called by the webhook_capture trigger).';

-- An UPDATE of taskd.runs ended: its status changes, one delivery per matching subscription.
CREATE OR REPLACE FUNCTION taskd.webhook_capture() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    news taskd.runs[];
    olds taskd.runs[];
    i int;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM taskd.webhook_subscriptions WHERE enabled AND NOT paused) THEN
        RETURN NULL;
    END IF;
    -- Each run's two images, paired by position: both in id order, and both tables hold the
    -- same ids (no statement changes a run's id). Aggregates rather than a join, because a
    -- join's plan would follow the caller's planner settings (taskd.claim_runs turns hash and
    -- merge joins off: a nested loop over the claim's rows squared).
    SELECT array_agg(n ORDER BY n.id) INTO news FROM changed_new n;
    SELECT array_agg(o ORDER BY o.id) INTO olds FROM changed_old o;
    FOR i IN 1 .. coalesce(cardinality(news), 0) LOOP
        IF (olds[i]).status IS DISTINCT FROM (news[i]).status
           AND (news[i]).task_id <> 'taskd.webhook' THEN
            PERFORM taskd.webhook_capture_run(news[i], (olds[i]).status, (olds[i]).attempt);
        END IF;
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
