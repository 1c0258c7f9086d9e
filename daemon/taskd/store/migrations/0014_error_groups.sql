-- Error groups for the console (issue 16): each failed attempt's fingerprint, computed once
-- when the failure is recorded (the completer's statement calls taskd.error_fingerprint), so
-- that grouping the failures of a time range is a scan of a small partial index. Failures are
-- the rare path: a completed attempt writes NULL and pays nothing. Also taskd.cancel_many, the
-- console's bulk cancel: taskd.cancel for each run of a batch still unfinished.

CREATE FUNCTION taskd.error_message_shape(message text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
SELECT regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(
           left(coalesce(message, ''), 2000),
           -- quoted strings first: what they quote (numbers included) is data. A single-quoted
           -- one starts at a quote no letter or digit precedes and ends at one none follows:
           -- an apostrophe inside a word (can't, O'Brien) opens or closes none
           '(?<![[:alnum:]])''(?:[^'']|''(?=[[:alnum:]]))*''(?![[:alnum:]])|"[^"]*"',
           '<str>', 'g'),
           '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}',
           '<id>', 'g'),
           -- 0x..., or a word of 6+ hex digits holding a digit and a letter (ab12cd34)
           '0[xX][0-9a-fA-F]+|\m(?=[0-9a-fA-F]{6,}\M)(?=[a-fA-F]*[0-9])(?=[0-9]*[a-fA-F])'
           '[0-9a-fA-F]+\M', '<hex>', 'g'),
           '[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?', '<num>', 'g'),
           '\s+', ' ', 'g')
$$;

COMMENT ON FUNCTION taskd.error_message_shape(text) IS
    'An error message with its data replaced by placeholders (quoted strings <str>: an '
    'apostrophe inside a word opens none; UUIDs <id>, hexadecimal <hex>, numbers <num>, runs of '
    'white space one space), first 2,000 characters: failures that differ only in their data '
    'have one shape.';

CREATE FUNCTION taskd.error_frame(traceback text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
-- The last frame of a Python traceback that is the task's own code: not inside the standard
-- library, an installed package (site-packages, dist-packages) or taskd itself. Its file is
-- given as its last two path components (stable across deploy directories):
-- "tasks/orders.py:12 in charge". NULL when no frame is the task's.
DECLARE
    m     text[];
    found text;
BEGIN
    FOR m IN SELECT regexp_matches(right(coalesce(traceback, ''), 8000),
                                   'File "([^"\n]*)", line ([0-9]+), in ([^\n]*)', 'g') LOOP
        IF m[1] !~ '(/lib/python[0-9.]*/|/site-packages/|/dist-packages/|^<)'
           AND m[1] !~ '/taskd/(admin|sdk|store|testing|worker)/[^/]*$|/taskd/[^/]*\.py$' THEN
            found := substring(m[1] FROM '([^/]*/?[^/]*)$') || ':' || m[2] || ' in '
                     || left(m[3], 200);
        END IF;
    END LOOP;
    RETURN found;
END
$$;

COMMENT ON FUNCTION taskd.error_frame(text) IS
    'The top frame of task code in a Python traceback text: its last frame outside the standard '
    'library, installed packages and taskd, as "dir/file.py:LINE in function"; NULL if none.';

CREATE FUNCTION taskd.error_fingerprint(error jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
-- The frame's line number is left out of the hash: a deploy that moves the line keeps the group.
SELECT CASE WHEN error IS NULL OR jsonb_typeof(error) <> 'object' THEN NULL
       ELSE left(encode(sha256(convert_to(
                coalesce(error->>'type', '') || E'\n'
                || taskd.error_message_shape(error->>'message') || E'\n'
                || coalesce(regexp_replace(taskd.error_frame(error->>'traceback'),
                                           ':[0-9]+ in ', ' in '), ''),
                'UTF8')), 'hex'), 16)
       END
$$;

COMMENT ON FUNCTION taskd.error_fingerprint(jsonb) IS
    'The error group of a failure: the first 16 hex digits of the SHA-256 of its type, its '
    'message''s shape (taskd.error_message_shape) and its top frame of task code '
    '(taskd.error_frame, without the line number).';

ALTER TABLE taskd.attempts ADD COLUMN fingerprint text;

COMMENT ON COLUMN taskd.attempts.fingerprint IS
    'The error group of a failed or timed-out attempt (taskd.error_fingerprint of its error), '
    'written with the attempt; NULL for the other outcomes.';

UPDATE taskd.attempts SET fingerprint = taskd.error_fingerprint(error)
 WHERE outcome IN ('failed', 'timed_out') AND error IS NOT NULL;

-- The failures of a time range, grouped: an index-only scan of the failed attempts alone.
CREATE INDEX attempts_failed_idx ON taskd.attempts (finished_at, fingerprint, run_id)
 WHERE fingerprint IS NOT NULL;
-- The runs of one error group, newest first.
CREATE INDEX attempts_fingerprint_idx ON taskd.attempts (fingerprint, run_id DESC)
 WHERE fingerprint IS NOT NULL;

CREATE FUNCTION taskd.cancel_many(run_ids uuid[])
    RETURNS TABLE (id uuid, task_id text, status text)
    LANGUAGE plpgsql
    AS $$
-- taskd.cancel for each run of the batch that is still unfinished when its row is locked (in
-- id order); the others (finished meanwhile, deleted, or canceled as a child of an earlier run
-- of the batch) are left out of the result.
DECLARE
    one     uuid;
    current text;
    task    text;
BEGIN
    FOR one IN SELECT u FROM unnest(run_ids) AS u ORDER BY u LOOP
        SELECT r.status, r.task_id INTO current, task FROM taskd.runs r WHERE r.id = one
           FOR UPDATE;
        IF FOUND AND current NOT IN ('completed', 'failed', 'canceled', 'expired') THEN
            id := one;
            task_id := task;
            status := taskd.cancel(one);
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;

COMMENT ON FUNCTION taskd.cancel_many(uuid[]) IS
    'taskd.cancel for each of these runs still unfinished (one transaction): (id, task_id, '
    'status after the call) of each; finished or missing runs are skipped, not an error.';
