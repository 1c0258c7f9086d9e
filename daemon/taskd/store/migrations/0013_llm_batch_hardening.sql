-- Message Batches hardened: the tries at storing an ended batch that failed are counted, so a
-- batch whose results cannot be stored is written ended without them (each request errored,
-- naming the cause) instead of being downloaded again every poll interval.

ALTER TABLE taskd.llm_batches ADD COLUMN finish_failures int NOT NULL DEFAULT 0;

COMMENT ON COLUMN taskd.llm_batches.finish_failures IS
    'Tries at storing the ended batch that failed (the database refused or was away); at 3 it '
    'is written ended, each request errored with the cause (last_error), its results not stored.';
COMMENT ON COLUMN taskd.llm_batches.step IS
    'The run''s step recording the submission: llm-batch:N (the N-th batch outside ctx.step in '
    'an execution) or llm-batch:<step>:N (the N-th inside the ctx.step <step>): a re-execution '
    'never submits again.';
COMMENT ON COLUMN taskd.llm_batches.results IS
    'Once ended: a JSON array in request order, each {custom_id, result} as the API gave it '
    '(result.type succeeded, errored, expired or canceled), NUL written as the text \x00; past '
    '128 MiB a result is stored errored (results_too_large).';
