-- Message Batches (ctx.llm.batch) under the budgets: a batch is admitted like a call, against
-- the sum of its requests' estimates at batch prices, and its reservation is trued up when the
-- batch ends (by the daemon that records its results).

-- A batch's admission counts toward the budgets (dollars) but not toward the queue's token and
-- request limits: the Message Batches API has rate limits of its own, apart from the Messages
-- API's that those limits keep within.
ALTER TABLE taskd.llm_admissions ADD COLUMN batch boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN taskd.llm_admissions.batch IS
    'A Message Batch (requests: its request count): counted by the budgets, not by the token '
    'and request limits.';

-- The batch's reservation: the admission to true up when it ends (NULL: the queue holds no
-- budget), and the dollars reserved (also against the run's own budget, until it ends).
ALTER TABLE taskd.llm_batches ADD COLUMN admission_id bigint;
ALTER TABLE taskd.llm_batches ADD COLUMN reserved_usd numeric(20, 10) NOT NULL DEFAULT 0
    CHECK (reserved_usd >= 0);
COMMENT ON COLUMN taskd.llm_batches.admission_id IS
    'Its admission in taskd.llm_admissions (the tenant budget), trued up when the batch ends; '
    'NULL: none.';
COMMENT ON COLUMN taskd.llm_batches.reserved_usd IS
    'The estimated cost reserved at submission (batch prices): counted against the run''s '
    'budget while the batch is open, replaced by its calls'' real cost when it ends.';
