-- Message Batches submitted by ctx.llm.batch: one row per batch, polled by the daemons'
-- maintenance loop (at most once per [llm] batch_poll_interval for the whole fleet) until it
-- ends; then its results, in request order, and the run woken to read them.

CREATE TABLE taskd.llm_batches (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id text NOT NULL UNIQUE,
    run_id uuid NOT NULL REFERENCES taskd.runs (id) ON DELETE CASCADE,
    step text NOT NULL,
    in_step text,
    task_id text NOT NULL,
    attempt int NOT NULL,
    queue text,
    concurrency_key text,
    tags text[] NOT NULL DEFAULT '{}',
    custom_ids text[] NOT NULL,
    models text[] NOT NULL,
    request_count int NOT NULL CHECK (request_count > 0),
    status text NOT NULL DEFAULT 'in_progress'
        CHECK (status IN ('in_progress', 'canceling', 'ended')),
    submitted_at timestamptz NOT NULL DEFAULT now(),
    next_poll_at timestamptz NOT NULL,
    polls int NOT NULL DEFAULT 0,
    last_polled_at timestamptz,
    last_error text,
    cancel_requested_at timestamptz,
    ended_at timestamptz,
    results jsonb,
    read_at timestamptz,
    missed_wakes int NOT NULL DEFAULT 0,
    CHECK (cardinality(custom_ids) = request_count AND cardinality(models) = request_count)
);
-- the poller's claim: open batches by their next poll
CREATE INDEX llm_batches_open_idx ON taskd.llm_batches (next_poll_at) WHERE status <> 'ended';
-- the poller's look for a run that suspended just after its batch ended (its wake-up missed)
CREATE INDEX llm_batches_unread_idx ON taskd.llm_batches (run_id)
    WHERE status = 'ended' AND read_at IS NULL;
CREATE INDEX llm_batches_run_idx ON taskd.llm_batches (run_id);

COMMENT ON TABLE taskd.llm_batches IS
    'Message Batches submitted by ctx.llm.batch (one per call): the Anthropic batch id, the run '
    'and step that submitted it, its requests'' custom ids and models in request order, its '
    'processing status, and once ended its results in request order.';
COMMENT ON COLUMN taskd.llm_batches.batch_id IS 'The Anthropic Message Batch id (msgbatch_...).';
COMMENT ON COLUMN taskd.llm_batches.step IS
    'The run''s step recording the submission (llm-batch:N): a re-execution never submits again.';
COMMENT ON COLUMN taskd.llm_batches.in_step IS
    'The ctx.step the batch was submitted in (its calls are attributed to it), or NULL.';
COMMENT ON COLUMN taskd.llm_batches.next_poll_at IS
    'No daemon asks the API about the batch before this ([llm] batch_poll_interval apart).';
COMMENT ON COLUMN taskd.llm_batches.read_at IS
    'When the run first read the ended batch''s results (NULL: not yet).';
COMMENT ON COLUMN taskd.llm_batches.results IS
    'Once ended: a JSON array in request order, each {custom_id, result} as the API gave it '
    '(result.type succeeded, errored, expired or canceled).';
