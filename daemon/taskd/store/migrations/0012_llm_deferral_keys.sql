-- The wait of a run for the LLM API belongs to the key (model, count_tokens, message_batches)
-- whose call deferred it, within one attempt of the run; admissions take a client-made request
-- id, so that an admission asked again (its first answer lost) is not reserved twice.

-- A row per run and key: a success of that key ends it (a success of another key does not:
-- the count_tokens call a token limit makes before each message is not the call the run waits
-- for). `attempt`: the run's attempt that deferred; a deferral of an earlier attempt (one that
-- ended failed, timed out or lost, and was retried) is over, and the next deferral starts
-- afresh. `request`: the client's id of the last deferral counted (the same deferral asked
-- again after a lost answer counts once). Rows written before this migration named no key:
-- they end (those runs' waits start over).
DELETE FROM taskd.llm_deferrals;
ALTER TABLE taskd.llm_deferrals
    ADD COLUMN key text NOT NULL,
    ADD COLUMN attempt int NOT NULL,
    ADD COLUMN request uuid,
    DROP CONSTRAINT llm_deferrals_pkey,
    ADD PRIMARY KEY (run_id, key);
COMMENT ON TABLE taskd.llm_deferrals IS
    'Runs waiting for the LLM API (429, overload, 5xx, connection), per key (model, '
    'count_tokens, message_batches) and attempt: since when, how often. Ended by a success of '
    'the key, or by the run''s next attempt.';
COMMENT ON COLUMN taskd.llm_deferrals.attempt IS
    'The run''s attempt that deferred: a deferral of an earlier attempt is over.';

-- The client's id of an admission: the same admission asked again (its answer lost with the
-- connection) finds the one reserved, instead of reserving twice.
ALTER TABLE taskd.llm_admissions ADD COLUMN request uuid;
CREATE UNIQUE INDEX llm_admissions_request_idx ON taskd.llm_admissions (request)
    WHERE request IS NOT NULL;
COMMENT ON COLUMN taskd.llm_admissions.request IS
    'The client''s id of the admission (NULL: none given): asked again, it is found, not '
    'reserved twice.';

COMMENT ON TABLE taskd.llm_calls IS
    'One row per call made through ctx.llm: tokens, cost (NULL: no price known for the model), '
    'outcome (ok, rate_limited, overloaded, server_error, connection_error, refused, budget, '
    'abandoned: a stream left before its message ended, canceled: the run canceled, timed out '
    'or drained while the call was in flight, its usage unknown).';
