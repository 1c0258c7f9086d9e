-- Outbound status webhooks: subscriptions (from [[webhooks]] in the config or the API), and
-- one delivery per run event and subscription. Events are captured here, in the database,
-- where every path that changes a run's status goes (the claim, the completer, the rescuer,
-- the expirer, SQL cancels, the waker): a row trigger on taskd.runs that returns at once while
-- no subscription is enabled. Each delivery is sent by a run of the internal task
-- 'taskd.webhook' (queue 'taskd.webhooks'), one (subscription, run) at a time in order: only
-- the oldest undelivered delivery of a (subscription, run) has a run; when that run ends, a
-- second trigger marks the delivery delivered or dead and starts the next one's run, in the
-- same transaction.
CREATE TABLE taskd.webhook_subscriptions (
    id uuid PRIMARY KEY DEFAULT taskd.new_run_id(),
    name text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$'),
    url text NOT NULL CHECK (url ~ '^https?://'),
    events text[] NOT NULL CHECK (cardinality(events) > 0 AND events <@ ARRAY[
        'run.started', 'run.completed', 'run.failed', 'run.canceled', 'run.expired',
        'run.attempt_failed', 'run.waiting']::text[]),
    tasks text[],
    queues text[],
    tags text[],
    secret text NOT NULL,
    previous_secret text,
    previous_secret_expires_at timestamptz,
    source text NOT NULL DEFAULT 'api' CHECK (source IN ('config', 'api')),
    enabled boolean NOT NULL DEFAULT true,
    paused boolean NOT NULL DEFAULT false,
    disabled_reason text,
    failing_since timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE taskd.webhook_subscriptions IS
    'Outbound status webhooks: where run events are POSTed, signed per Standard Webhooks.';
COMMENT ON COLUMN taskd.webhook_subscriptions.events IS
    'The run events sent: run.started, run.completed, run.failed, run.canceled, run.expired, run.attempt_failed, run.waiting.';
COMMENT ON COLUMN taskd.webhook_subscriptions.tasks IS 'Only runs of these tasks (NULL: all).';
COMMENT ON COLUMN taskd.webhook_subscriptions.queues IS 'Only runs in these queues (NULL: all).';
COMMENT ON COLUMN taskd.webhook_subscriptions.tags IS 'Only runs with one of these tags (NULL: all).';
COMMENT ON COLUMN taskd.webhook_subscriptions.secret IS
    'The signing secret (whsec_ + base64); previous_secret signs too until previous_secret_expires_at (rotation).';
COMMENT ON COLUMN taskd.webhook_subscriptions.enabled IS
    'false: disabled (disabled_reason says why: failing for [webhook_delivery] disable_after, a 410 Gone, the config); no events are captured.';
COMMENT ON COLUMN taskd.webhook_subscriptions.failing_since IS
    'The first failed attempt since the last success (NULL: not failing).';

CREATE TABLE taskd.webhook_deliveries (
    id uuid PRIMARY KEY DEFAULT taskd.new_run_id(),
    subscription_id uuid NOT NULL REFERENCES taskd.webhook_subscriptions (id) ON DELETE CASCADE,
    run_id uuid NOT NULL,
    seq integer NOT NULL,
    event text NOT NULL,
    payload jsonb NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sending', 'delivered', 'dead')),
    attempts integer NOT NULL DEFAULT 0,
    last_status integer,
    last_error text,
    delivery_run_id uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    UNIQUE (subscription_id, run_id, seq)
);

CREATE INDEX webhook_deliveries_run_idx ON taskd.webhook_deliveries (delivery_run_id)
    WHERE delivery_run_id IS NOT NULL;
CREATE INDEX webhook_deliveries_open_idx ON taskd.webhook_deliveries (subscription_id, run_id, seq)
    WHERE status IN ('pending', 'sending');
CREATE INDEX webhook_deliveries_sub_idx ON taskd.webhook_deliveries (subscription_id, id);

COMMENT ON TABLE taskd.webhook_deliveries IS
    'One row per run event and subscription; its id is the webhook-id header (stable across retries).';
COMMENT ON COLUMN taskd.webhook_deliveries.seq IS 'Its place among the events of one (subscription, run): sent in this order.';
COMMENT ON COLUMN taskd.webhook_deliveries.payload IS 'The JSON body: the run''s state when the event happened (taskd.webhook_payload).';
COMMENT ON COLUMN taskd.webhook_deliveries.status IS
    'pending (waiting for the delivery before it), sending (its run is queued or executing), delivered, dead (its last try failed: redeliverable).';
COMMENT ON COLUMN taskd.webhook_deliveries.delivery_run_id IS 'The run of taskd.webhook sending it (the latest, after a redelivery).';

-- The body of a delivery: the one place its JSON is built.
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

COMMENT ON FUNCTION taskd.webhook_payload(taskd.runs, text) IS
    'The JSON body of a status webhook: {type, timestamp, data: the run''s state}.';

-- Queue the run of taskd.webhook that sends this delivery (it becomes "sending").
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

-- A run changed status: one delivery per matching subscription.
CREATE FUNCTION taskd.webhook_capture() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    event text;
    body jsonb;
    sub record;
    delivery uuid;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM taskd.webhook_subscriptions WHERE enabled AND NOT paused) THEN
        RETURN NULL;
    END IF;
    event := CASE NEW.status
        WHEN 'executing' THEN 'run.started'
        WHEN 'completed' THEN 'run.completed'
        WHEN 'failed' THEN 'run.failed'
        WHEN 'canceled' THEN 'run.canceled'
        WHEN 'expired' THEN 'run.expired'
        WHEN 'waiting' THEN 'run.waiting'
        -- an attempt that failed (the completer's retry, the rescuer's lost attempt); a
        -- hand-back at a drain gives its attempt back and says nothing
        WHEN 'queued' THEN CASE WHEN OLD.status = 'executing' AND NEW.attempt >= OLD.attempt
                                THEN 'run.attempt_failed' END
    END;
    IF event IS NULL THEN
        RETURN NULL;
    END IF;
    FOR sub IN
        SELECT s.id FROM taskd.webhook_subscriptions s
         WHERE s.enabled AND NOT s.paused AND event = ANY (s.events)
           AND (s.tasks IS NULL OR NEW.task_id = ANY (s.tasks))
           AND (s.queues IS NULL OR NEW.queue = ANY (s.queues))
           AND (s.tags IS NULL OR NEW.tags && s.tags)
         ORDER BY s.id
    LOOP
        body := coalesce(body, taskd.webhook_payload(NEW, event));
        INSERT INTO taskd.webhook_deliveries (subscription_id, run_id, seq, event, payload)
        VALUES (sub.id, NEW.id,
                coalesce((SELECT max(w.seq) FROM taskd.webhook_deliveries w
                           WHERE w.subscription_id = sub.id AND w.run_id = NEW.id), 0) + 1,
                event, body)
        RETURNING id INTO delivery;
        -- The deliveries before it, locked: a delivery run ending now (which marks its
        -- delivery with an UPDATE, then starts the next pending one) cannot see this
        -- uncommitted one, so the two serialize on its row: if it ended first, this one
        -- finds it delivered and starts itself; if not, it waits for this commit and then
        -- finds this one pending.
        PERFORM 1 FROM taskd.webhook_deliveries w
          WHERE w.subscription_id = sub.id AND w.run_id = NEW.id
            AND w.status IN ('pending', 'sending') AND w.id <> delivery
            FOR UPDATE;
        IF NOT FOUND THEN
            PERFORM taskd.webhook_start_delivery(delivery);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- A run of taskd.webhook ended: its delivery is delivered (completed) or dead (failed,
-- canceled, expired), and the next delivery of the same (subscription, run) gets its run.
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

CREATE TRIGGER webhook_capture AFTER UPDATE OF status ON taskd.runs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.task_id <> 'taskd.webhook')
    EXECUTE FUNCTION taskd.webhook_capture();

CREATE TRIGGER webhook_delivery_ended AFTER UPDATE OF status ON taskd.runs
    FOR EACH ROW
    WHEN (NEW.task_id = 'taskd.webhook' AND OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('completed', 'failed', 'canceled', 'expired'))
    EXECUTE FUNCTION taskd.webhook_delivery_ended();
