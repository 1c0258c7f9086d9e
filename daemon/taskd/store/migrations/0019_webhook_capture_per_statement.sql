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
-- subscription (0018's row body, run by run, in the order the statement updated them).
CREATE OR REPLACE FUNCTION taskd.webhook_capture() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    olds jsonb;
    prev jsonb;
    run taskd.runs;
    old_status text;
    event text;
    body jsonb;
    sub record;
    delivery uuid;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM taskd.webhook_subscriptions WHERE enabled AND NOT paused) THEN
        RETURN NULL;
    END IF;
    -- Each run's status and attempt before the statement, by id: a jsonb object is looked up
    -- by binary search. Not a join of the two transition tables: its plan would follow the
    -- caller's planner settings (taskd.claim_runs turns hash and merge joins off: a nested
    -- loop over the claim's rows squared). Not arrays indexed by position either: an array
    -- of rows is walked from its start at each subscript.
    SELECT jsonb_object_agg(o.id::text, jsonb_build_array(o.status, o.attempt)) INTO olds
      FROM changed_old o;
    FOR run IN SELECT n.* FROM changed_new n LOOP
        prev := olds -> run.id::text;
        old_status := prev ->> 0;
        CONTINUE WHEN old_status IS NOT DISTINCT FROM run.status
                      OR run.task_id = 'taskd.webhook';
        event := CASE run.status
            WHEN 'executing' THEN 'run.started'
            WHEN 'completed' THEN 'run.completed'
            WHEN 'failed' THEN 'run.failed'
            WHEN 'canceled' THEN 'run.canceled'
            WHEN 'expired' THEN 'run.expired'
            WHEN 'waiting' THEN 'run.waiting'
            -- an attempt that failed (the completer's retry, the rescuer's lost attempt); a
            -- hand-back at a drain gives its attempt back and says nothing
            WHEN 'queued' THEN CASE WHEN old_status = 'executing'
                                         AND run.attempt >= (prev ->> 1)::int
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
