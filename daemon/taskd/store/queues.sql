-- Queues: depths, limits the code declares and an operator sets, pause.
-- Loaded by store/queues.py (store/queries.py: blocks headed `-- name: NAME`).

-- name: depths
SELECT queue,
       count(*) FILTER (WHERE run_at <= now()) AS due,
       count(*) FILTER (WHERE run_at > now()) AS delayed,
       min(run_at) FILTER (WHERE run_at <= now()) AS oldest_due
  FROM taskd.runs WHERE status = 'queued'
 GROUP BY queue ORDER BY queue;

-- name: settings
SELECT name, concurrency, concurrency_per_key, rate_limit, rate_period, paused, overridden,
       declared, updated_at, llm_limits
  FROM taskd.queues ORDER BY name;

-- name: depth_one
-- One queue's queued runs (runs_claim_idx, whose first column is the queue).
SELECT count(*) FILTER (WHERE run_at <= now()) AS due,
       count(*) FILTER (WHERE run_at > now()) AS delayed,
       min(run_at) FILTER (WHERE run_at <= now()) AS oldest_due
  FROM taskd.runs WHERE status = 'queued' AND queue = $1;

-- name: executing_one
-- One queue's runs executing (runs_lease_idx).
SELECT count(*) FROM taskd.runs WHERE lease_expires_at IS NOT NULL AND queue = $1;

-- name: settings_one
SELECT name, concurrency, concurrency_per_key, rate_limit, rate_period, paused, overridden,
       declared, updated_at, llm_limits
  FROM taskd.queues WHERE name = $1;

-- name: sync
-- The queues this daemon's tasks declare, with the limits in the code. Limits an operator set
-- (overridden) stay; the code's are kept in declared for `taskd queues reset`. The LLM call
-- limits and budget ($7) always follow the code.
INSERT INTO taskd.queues AS q (name, concurrency, concurrency_per_key, rate_limit, rate_period,
                               declared, llm_limits)
SELECT * FROM unnest($1::text[], $2::int[], $3::int[], $4::int[], $5::float8[], $6::jsonb[],
                     $7::jsonb[])
ON CONFLICT (name) DO UPDATE
   SET declared = excluded.declared,
       llm_limits = excluded.llm_limits,
       concurrency = CASE WHEN q.overridden THEN q.concurrency ELSE excluded.concurrency END,
       concurrency_per_key = CASE WHEN q.overridden THEN q.concurrency_per_key
                                  ELSE excluded.concurrency_per_key END,
       rate_limit = CASE WHEN q.overridden THEN q.rate_limit ELSE excluded.rate_limit END,
       rate_period = CASE WHEN q.overridden THEN q.rate_period ELSE excluded.rate_period END,
       updated_at = now()
 WHERE q.declared IS DISTINCT FROM excluded.declared
    OR q.llm_limits IS DISTINCT FROM excluded.llm_limits
    OR (NOT q.overridden
        AND (q.concurrency, q.concurrency_per_key, q.rate_limit, q.rate_period)
            IS DISTINCT FROM (excluded.concurrency, excluded.concurrency_per_key,
                              excluded.rate_limit, excluded.rate_period));

-- name: pause
-- Pause ($2 true) or resume a queue; a resumed queue nudges the claimers at once.
WITH changed AS (
    INSERT INTO taskd.queues AS q (name, paused) VALUES ($1, $2)
    ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = now()
    RETURNING q.name, q.paused
)
SELECT changed.name, CASE WHEN NOT changed.paused THEN pg_notify('taskd_wakeup', changed.name) END
  FROM changed;

-- name: set_limits
-- An operator's limits: the fields flagged ($3, $5, $8) change, the others stay. They hold
-- until `taskd queues reset`, whatever the code declares. Nudges the claimers: a raised limit
-- may let runs start now.
WITH changed AS (
    INSERT INTO taskd.queues AS q (name, concurrency, concurrency_per_key, rate_limit,
                                   rate_period, overridden)
    VALUES ($1, $2, $4, $6, $7, true)
    ON CONFLICT (name) DO UPDATE
       SET concurrency = CASE WHEN $3 THEN excluded.concurrency ELSE q.concurrency END,
           concurrency_per_key = CASE WHEN $5 THEN excluded.concurrency_per_key
                                      ELSE q.concurrency_per_key END,
           rate_limit = CASE WHEN $8 THEN excluded.rate_limit ELSE q.rate_limit END,
           rate_period = CASE WHEN $8 THEN excluded.rate_period ELSE q.rate_period END,
           overridden = true, updated_at = now()
    RETURNING q.name
)
SELECT changed.name, pg_notify('taskd_wakeup', changed.name) FROM changed;

-- name: reset
-- Back to the limits the code declares (as the last daemon that started registered them).
WITH changed AS (
    UPDATE taskd.queues q
       SET concurrency = (q.declared->>'concurrency')::int,
           concurrency_per_key = (q.declared->>'concurrency_per_key')::int,
           rate_limit = (q.declared->>'rate_limit')::int,
           rate_period = (q.declared->>'rate_period')::float8,
           overridden = false, updated_at = now()
     WHERE q.name = $1
    RETURNING q.name
)
SELECT changed.name, pg_notify('taskd_wakeup', changed.name) FROM changed;

-- name: executing
-- Runs executing per queue (through runs_lease_idx: executing runs are the leased ones).
SELECT queue, count(*) AS executing FROM taskd.runs
 WHERE lease_expires_at IS NOT NULL GROUP BY queue;
