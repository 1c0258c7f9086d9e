-- Wait tokens: a run waits until something outside completes its token (a human approval, a
-- webhook), or the token times out. Completing a waiting run's token queues the run again.
CREATE TABLE taskd.wait_tokens (
    id           uuid PRIMARY KEY,
    run_id       uuid NOT NULL,
    status       text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'completed', 'timed_out')),
    data         jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    completed_at timestamptz,
    -- completed, but its run was not waiting yet (it was still executing): the wake loop
    -- queues the run once it waits. Cleared when the run has seen the data.
    unseen       boolean NOT NULL DEFAULT false
);
CREATE INDEX wait_tokens_run_idx ON taskd.wait_tokens (run_id);
CREATE INDEX wait_tokens_unseen_idx ON taskd.wait_tokens (run_id) WHERE unseen;

-- taskd.complete_token(id, data) -> 'completed'. Records the data and queues the waiting run.
-- SQLSTATE TD404: no such token; TD409: already completed or timed out.
CREATE FUNCTION taskd.complete_token(token_id uuid, token_data jsonb DEFAULT 'null')
RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    token taskd.wait_tokens%ROWTYPE;
    q     text;
BEGIN
    SELECT * INTO token FROM taskd.wait_tokens t WHERE t.id = token_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'taskd.complete_token: no token with id %', token_id USING ERRCODE = 'TD404';
    END IF;
    IF token.status <> 'pending' THEN
        RAISE EXCEPTION 'taskd.complete_token: token % is already %', token_id, token.status
            USING ERRCODE = 'TD409';
    END IF;
    UPDATE taskd.runs r SET status = 'queued', run_at = now()
     WHERE r.id = token.run_id AND r.status = 'waiting'
    RETURNING r.queue INTO q;
    UPDATE taskd.wait_tokens t
       SET status = 'completed', data = coalesce(token_data, 'null'::jsonb),
           completed_at = now(), unseen = (q IS NULL)
     WHERE t.id = token_id;
    IF q IS NOT NULL THEN
        PERFORM pg_notify('taskd_wakeup', q);
    END IF;
    RETURN 'completed';
END
$$;
