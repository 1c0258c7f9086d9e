-- Schedules from SQL, for producers in any language: create, update, delete, and fire now.
-- Each runs in the caller's transaction; the daemons' schedulers are notified
-- (NOTIFY taskd_schedules) when it commits, as after the Python client's calls.
--
-- Errors: SQLSTATE 22023 (invalid_parameter_value) for a bad argument (unknown option, bad
-- cron field, unknown timezone, unknown catch-up policy), 54000 (program_limit_exceeded) for
-- a payload over [tasks] max_payload_bytes, TD404 for an unknown schedule id: as taskd.trigger
-- and taskd.cancel report theirs.
--
-- What SQL checks of a cron: its form (5 fields, 6 with seconds first, or a shorthand such as
-- @daily), each field's syntax (*, N, N-M, */S, N-M/S, N/S, lists with commas; names for
-- months and weekdays; `last` for the day) and each number's range (second and minute 0-59,
-- hour 0-23, day 1-31, month 1-12, weekday 0-7). What it does not check: whether any date
-- matches (`0 0 30 2 *` never fires) and APScheduler's finer rules. The Python client refuses
-- those at the call; a schedule written from SQL with one is stored, skipped by every
-- daemon's scheduler with one error line, and listed with no next fire time.


-- taskd.check_schedule(cron, timezone, catch_up): raises 22023 naming the problem, or returns.
-- Shared by create_schedule and update_schedule.
CREATE FUNCTION taskd.check_schedule(cron text, timezone text, catch_up text, caller text)
RETURNS void LANGUAGE plpgsql STABLE AS $$
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
$$;
COMMENT ON FUNCTION taskd.check_schedule(text, text, text, text) IS
    'The checks of taskd.create_schedule and taskd.update_schedule: call those.';


-- taskd.schedule_option_text(options, key, caller): options->>key, refusing a value that is not
-- a JSON string (or null).
CREATE FUNCTION taskd.schedule_option_text(options jsonb, key text, caller text)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF jsonb_typeof(options->key) NOT IN ('string', 'null') THEN
        RAISE EXCEPTION '%: % must be a string, not %', caller, key, options->key
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN options->>key;
END
$$;
COMMENT ON FUNCTION taskd.schedule_option_text(jsonb, text, text) IS
    'A text option of taskd.create_schedule and taskd.update_schedule.';


-- taskd.check_schedule_payload(payload, caller): the payload limit of taskd.trigger.
CREATE FUNCTION taskd.check_schedule_payload(payload jsonb, caller text)
RETURNS void LANGUAGE plpgsql STABLE AS $$
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
COMMENT ON FUNCTION taskd.check_schedule_payload(jsonb, text) IS
    'The payload limit of taskd.create_schedule and taskd.update_schedule.';


-- taskd.create_schedule(task_id, cron, options) -> the schedule's id ('sched_' and 32 hex
-- digits, as the client makes). options: timezone (IANA name, default UTC), payload (any
-- JSON: reaches every run as ScheduledRun.payload), external_id (text), dedup_key (text:
-- creating again with the same key updates that schedule and returns its id), catch_up
-- (latest, all or none; default latest).
CREATE FUNCTION taskd.create_schedule(task_id text, cron text, options jsonb DEFAULT '{}')
RETURNS text LANGUAGE plpgsql VOLATILE AS $$
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


-- taskd.update_schedule(schedule_id, changes) -> the schedule's id. changes: cron, timezone,
-- catch_up (each replaces the value), payload (any JSON; null clears it), external_id (text;
-- null clears it), active (boolean: false pauses, true resumes; missed fire times then follow
-- the catch-up policy). A key left out keeps its value. SQLSTATE TD404: no such schedule.
CREATE FUNCTION taskd.update_schedule(schedule_id text, changes jsonb)
RETURNS text LANGUAGE plpgsql VOLATILE AS $$
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


-- taskd.delete_schedule(schedule_id): the schedule is gone; the runs it fired stay (their
-- schedule_id still names it). SQLSTATE TD404: no such schedule.
CREATE FUNCTION taskd.delete_schedule(schedule_id text)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    DELETE FROM taskd.schedules s WHERE s.id = schedule_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'taskd.delete_schedule: no schedule with id %', quote_literal(schedule_id)
            USING ERRCODE = 'TD404';
    END IF;
    PERFORM pg_notify('taskd_schedules', schedule_id);
END
$$;


-- taskd.schedule_time(fire_at, zone): ISO 8601 with the zone's offset, as the scheduler writes
-- ScheduledRun.timestamp ('2026-03-29T09:00:00+02:00'); NULL for NULL.
CREATE FUNCTION taskd.schedule_time(fire_at timestamptz, zone text)
RETURNS text LANGUAGE plpgsql STABLE AS $$
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
COMMENT ON FUNCTION taskd.schedule_time(timestamptz, text) IS
    'A fire time as ScheduledRun.timestamp writes it, for taskd.trigger_schedule.';


-- taskd.trigger_schedule(schedule_id) -> the new run's id. Fires the schedule now, paused or
-- not: a run of its task in the task's queue with the payload a scheduled fire gives
-- (ScheduledRun: timestamp = now in the schedule's timezone, last_timestamp = its last
-- scheduled fire, schedule_id, timezone, external_id, payload), plus "manual": true. The run
-- has the schedule's schedule_id and no scheduled_for (runs_schedule_fire_idx ignores it), and
-- last_fired_at is not touched: the next scheduled fire is the same as before, and fires.
-- SQLSTATE TD404: no such schedule.
CREATE FUNCTION taskd.trigger_schedule(schedule_id text)
RETURNS uuid LANGUAGE plpgsql VOLATILE AS $$
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
