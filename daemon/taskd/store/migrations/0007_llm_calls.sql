-- LLM calls made through ctx.llm: one row per call (its tokens, cost and outcome), the
-- per-model backoff every daemon honours after a 429 or an overload, and the runs handed back
-- to the queue while the API was unavailable (how long they have waited, against [llm] max_wait).

-- A row per call, written in batches off the run's hot path (flushed before the run's outcome).
-- No foreign key to runs: what a call cost outlives the run's pruned history. The run's task,
-- queue, concurrency key and tags are copied so that costs sum by them after the run is gone.
CREATE TABLE taskd.llm_calls (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id uuid,
    task_id text NOT NULL,
    attempt int,
    step text,
    queue text,
    concurrency_key text,
    tags text[] NOT NULL DEFAULT '{}',
    model text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('message', 'stream', 'count_tokens', 'batch')),
    outcome text NOT NULL,
    input_tokens bigint NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens bigint NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    cache_write_tokens bigint NOT NULL DEFAULT 0 CHECK (cache_write_tokens >= 0),
    cache_read_tokens bigint NOT NULL DEFAULT 0 CHECK (cache_read_tokens >= 0),
    cost_usd numeric(20, 10),
    latency_ms int,
    stop_reason text,
    request_id text,
    error text,
    started_at timestamptz NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX llm_calls_started_idx ON taskd.llm_calls (started_at);
CREATE INDEX llm_calls_run_idx ON taskd.llm_calls (run_id, id);

COMMENT ON TABLE taskd.llm_calls IS
    'One row per call made through ctx.llm: tokens, cost (NULL: no price known for the model), '
    'outcome (ok, rate_limited, overloaded, server_error, connection_error, refused, budget).';
COMMENT ON COLUMN taskd.llm_calls.cost_usd IS
    'US dollars at the [llm] prices of the model when the call was recorded (batch: half).';

-- The whole fleet's memory of an API that said "not before": no daemon starts a call of the
-- model before `until`. `overloads` counts overload answers in a row (the adaptive backoff's
-- exponent), reset by a call that succeeds.
CREATE TABLE taskd.llm_backoffs (
    model text PRIMARY KEY,
    until timestamptz NOT NULL,
    overloads int NOT NULL DEFAULT 0,
    reason text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE taskd.llm_backoffs IS
    'Per model: no daemon starts a call before `until` (from a 429''s retry-after or reset '
    'headers, or the adaptive backoff after overload answers).';

-- A run handed back to the queue because the API was unavailable, since when: past
-- [llm] max_wait it fails with the API's message. Deleted by the run's next successful call.
CREATE TABLE taskd.llm_deferrals (
    run_id uuid PRIMARY KEY REFERENCES taskd.runs (id) ON DELETE CASCADE,
    since timestamptz NOT NULL DEFAULT now(),
    deferrals int NOT NULL DEFAULT 1,
    reason text NOT NULL
);
COMMENT ON TABLE taskd.llm_deferrals IS
    'Runs waiting for the LLM API (429, overload, 5xx, connection): since when, how often.';
