-- Durable steps (ctx.step): a step's result is recorded once per run; when the run executes
-- again (a retry, a resume, a crash) the recorded result is returned without calling the step.
CREATE TABLE taskd.steps (
    run_id      uuid NOT NULL,
    name        text NOT NULL,
    status      text NOT NULL CHECK (status IN ('completed', 'failed')),
    result      jsonb,
    error       jsonb,
    attempts    int NOT NULL,             -- tries of the step's function (its own retry)
    run_attempt int NOT NULL,             -- the run's attempt that recorded it
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    PRIMARY KEY (run_id, name)
);
