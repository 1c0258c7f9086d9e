-- Idempotency keys: a second trigger of a task with the same key, while the key lives
-- (idempotency_ttl, 24 h by default), returns the first run's id and creates nothing. The
-- primary key of this table enforces it, also under concurrent triggers from any number of
-- connections: no read-then-write.
CREATE TABLE taskd.idempotency_keys (
    task_id         text NOT NULL,
    idempotency_key text NOT NULL,
    run_id          uuid NOT NULL,
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (task_id, idempotency_key)
);
CREATE INDEX idempotency_keys_expiry_idx ON taskd.idempotency_keys (expires_at);

ALTER TABLE taskd.runs ADD COLUMN idempotency_key text;

-- taskd.trigger gains the options idempotency_key (text) and idempotency_ttl (seconds or an
-- interval; default 24 hours).
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
                     'idempotency_key', 'idempotency_ttl');
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
                            expires_at, idempotency_key)
    VALUES (run_id, task_id, q, coalesce(payload, 'null'::jsonb),
            coalesce((options->>'priority')::int, 0), start_at,
            (options->>'max_attempts')::int,
            coalesce(ARRAY(SELECT jsonb_array_elements_text(options->'tags')), '{}'),
            CASE WHEN options ? 'ttl' THEN now() + CASE jsonb_typeof(options->'ttl')
                WHEN 'number' THEN make_interval(secs => (options->>'ttl')::float8)
                ELSE (options->>'ttl')::interval END END,
            idem_key);
    PERFORM pg_notify('taskd_wakeup', q);
    RETURN run_id;
END
$$;
