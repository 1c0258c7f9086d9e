-- A run's own retry policy and max_duration, given at trigger (seed 002 passes a whole retry
-- config per job): precedence trigger > the task's own > [tasks] retry / max_duration in the
-- config > the built-in Retry().
--
-- runs.retry: the backoff fields the trigger gave (min_delay, max_delay in seconds, factor,
-- jitter), each over the task's; NULL: the task's. The attempt limit stays in max_attempts (a
-- trigger's retry.max_attempts is stored there), so that every reader of max_attempts (the
-- rescuer, the failure hooks, monitoring SQL) keeps one place to look.
-- runs.max_duration: seconds an attempt of this run may take; NULL: the task's.
-- NOT VALID: the constraints hold for every row written from now on without reading the
-- table (the new columns are NULL in every existing row).
ALTER TABLE taskd.runs ADD COLUMN retry jsonb, ADD COLUMN max_duration float8;
ALTER TABLE taskd.runs ADD CONSTRAINT runs_retry_object
    CHECK (retry IS NULL OR jsonb_typeof(retry) = 'object') NOT VALID;
ALTER TABLE taskd.runs ADD CONSTRAINT runs_max_duration_positive
    CHECK (max_duration IS NULL OR max_duration > 0) NOT VALID;

-- taskd.option_seconds(name, value) -> seconds: a JSON number of seconds, or a string holding
-- an interval ('10s', '5 minutes', '1h30m'); an error naming the option otherwise.
CREATE FUNCTION taskd.option_seconds(name text, value jsonb) RETURNS float8
LANGUAGE plpgsql STABLE AS $$
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

-- taskd.retry_option(retry) -> the trigger's retry option, checked and normalised: an object
-- with some of max_attempts (int >= 1), min_delay and max_delay (seconds or intervals, stored
-- as seconds: 0 <= min_delay <= max_delay, at most 100 years), factor (>= 1), jitter (boolean).
-- The fields not given are the task's. An error naming the field otherwise.
CREATE FUNCTION taskd.retry_option(retry jsonb) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
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

-- taskd.trigger(task_id, payload, options) -> run id. As in the baseline, with two more
-- options: retry (an object: max_attempts, min_delay, max_delay, factor, jitter; each field
-- given overrides the task's, see taskd.retry_option) and max_duration (seconds or an
-- interval: an attempt running longer is cancelled and fails, instead of the task's).
-- max_attempts and retry.max_attempts may both be given only if they agree.
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
