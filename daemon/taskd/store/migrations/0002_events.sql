-- Events: a producer records a named event; every task subscribed to the name gets a run,
-- in the producer's transaction. An event nobody subscribes to is recorded all the same.

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

ALTER TABLE taskd.runs ADD COLUMN event_id uuid;
CREATE INDEX runs_event_idx ON taskd.runs (event_id) WHERE event_id IS NOT NULL;

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
