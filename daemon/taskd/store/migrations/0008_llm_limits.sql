-- Limits and budgets on the LLM calls a queue's runs make through ctx.llm, held across
-- daemons: the queue's limits (declared in code, synced by every daemon at start-up) and the
-- admissions each call reserved against them (an estimate before the call, trued up with the
-- call's real usage after it).

-- The queue's LLM call limits and budget, as the code declares them (Queue.llm_limits):
-- {"calls": {"tokens": n, "input_tokens": n, "output_tokens": n, "requests": n,
--            "period": seconds},
--  "budget": {"usd": dollars, "period": seconds, "on_exceed": "fail" | "wait"}}
ALTER TABLE taskd.queues ADD COLUMN llm_limits jsonb;
COMMENT ON COLUMN taskd.queues.llm_limits IS
    'Limits on the LLM calls of its runs (tokens, input/output tokens, requests per period) '
    'and its budget per concurrency key (dollars per period), as the code declares them.';

-- One row per LLM call admitted under a queue's limits or budget: what it reserved (its
-- estimate), then what it used (trued up after the call). Admissions are made under a
-- per-queue transaction advisory lock, against the sums over the sliding window; rows older
-- than the longest period (a day) are pruned.
CREATE TABLE taskd.llm_admissions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue text NOT NULL,
    concurrency_key text NOT NULL DEFAULT '',
    run_id uuid,
    admitted_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    input bigint NOT NULL DEFAULT 0 CHECK (input >= 0),
    output bigint NOT NULL DEFAULT 0 CHECK (output >= 0),
    requests int NOT NULL DEFAULT 1 CHECK (requests >= 0),
    cost numeric(20, 10) NOT NULL DEFAULT 0 CHECK (cost >= 0),
    settled boolean NOT NULL DEFAULT false
);
CREATE INDEX llm_admissions_queue_idx ON taskd.llm_admissions (queue, admitted_at);
CREATE INDEX llm_admissions_key_idx ON taskd.llm_admissions (queue, concurrency_key, admitted_at);
CREATE INDEX llm_admissions_at_idx ON taskd.llm_admissions (admitted_at);

COMMENT ON TABLE taskd.llm_admissions IS
    'LLM calls admitted under a queue''s limits or budget: tokens, requests and dollars '
    'reserved before the call (its estimate), trued up with its real usage after it (settled).';
COMMENT ON COLUMN taskd.llm_admissions.concurrency_key IS
    'The run''s concurrency key (the tenant a budget is kept per); empty: runs without a key.';
