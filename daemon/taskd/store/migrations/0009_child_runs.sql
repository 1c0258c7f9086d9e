-- Child runs (trigger_and_wait): canceling a run cancels its unfinished children, and theirs.
CREATE OR REPLACE FUNCTION taskd.cancel(run_id uuid) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    current text;
    child   uuid;
    result  text;
BEGIN
    SELECT r.status INTO current FROM taskd.runs r WHERE r.id = run_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'taskd.cancel: no run with id %', run_id USING ERRCODE = 'TD404';
    END IF;
    IF current IN ('completed', 'failed', 'canceled', 'expired') THEN
        RAISE EXCEPTION 'taskd.cancel: run % has already finished (%)', run_id, current
            USING ERRCODE = 'TD409';
    END IF;
    IF current = 'executing' THEN
        UPDATE taskd.runs r SET cancel_requested_at = coalesce(r.cancel_requested_at, now())
         WHERE r.id = run_id;
        PERFORM pg_notify('taskd_cancel', run_id::text);
        result := 'executing';
    ELSE
        UPDATE taskd.runs r
           SET status = 'canceled', finished_at = now(), cancel_requested_at = now(),
               error = jsonb_build_object('type', 'Canceled',
                                          'message', 'canceled while ' || current
                                                     || ', before its next attempt')
         WHERE r.id = run_id;
        result := 'canceled';
    END IF;
    FOR child IN SELECT c.id FROM taskd.runs c
                  WHERE c.parent_id = run_id
                    AND c.status NOT IN ('completed', 'failed', 'canceled', 'expired')
                  ORDER BY c.id LOOP
        PERFORM taskd.cancel(child);
    END LOOP;
    RETURN result;
END
$$;
