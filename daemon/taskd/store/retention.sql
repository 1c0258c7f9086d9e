-- Deleting what is past its retention, in small batches that skip locked rows.
-- Loaded by store/retention.py (store/queries.py: blocks headed `-- name: NAME`).

-- name: prune_failure_hooks
-- Owed hooks of runs the retention deleted (a task no daemon served again meanwhile).
WITH doomed AS (
    SELECT h.run_id FROM taskd.failure_hooks h
     WHERE NOT EXISTS (SELECT 1 FROM taskd.runs r WHERE r.id = h.run_id)
     LIMIT $1
       FOR UPDATE SKIP LOCKED
)
DELETE FROM taskd.failure_hooks h USING doomed WHERE h.run_id = doomed.run_id;

-- name: prune_runs
-- Finished runs older than the retention, oldest first, one window at a time: the next $3
-- ids along the primary key after $4 (NULL at a pass's start) below $1 (the id of the cutoff
-- moment: ids begin with their creation time), read in index order and nothing more. The
-- window is its own statement (MATERIALIZED, LIMIT on the bare key): with the filters below in
-- the same scan the planner guesses how few rows pass them (get_byte(...) = 7 alone is costed
-- at 0.5 %), reads and sorts the whole range below the cutoff for every batch, and a day of a
-- million runs to delete reads a million rows per batch of 200.
-- Of the window, the finished runs whose parent is not unfinished go, with their attempts,
-- log lines, steps and wait tokens. SKIP LOCKED: never waits on a run something else holds.
-- Only UUIDv7 ids tell their creation time: a hand-made id of another version may sort below
-- the cutoff whatever its age, and is never pruned.
-- A child whose parent has not finished stays, however old: the parent reads the outcomes
-- of its children when it resumes (trigger_and_wait), and may wait longer than the retention.
-- Returns the window's last id (NULL: the pass reached the cutoff; else the next window
-- starts after it, so the old runs that stay are read once per pass) and how many went.
WITH span AS MATERIALIZED (
    SELECT id FROM taskd.runs
     WHERE id < $1 AND id > coalesce($4, '00000000-0000-0000-0000-000000000000'::uuid)
     ORDER BY id
     LIMIT $3
), doomed AS (
    -- the window as a range of the key (not `IN (SELECT id FROM span)`: the join the planner
    -- may choose for that reads the whole table when it expects few runs to pass the filters)
    SELECT r.id FROM taskd.runs r
     WHERE r.id > coalesce($4, '00000000-0000-0000-0000-000000000000'::uuid)
       AND r.id <= (SELECT id FROM span ORDER BY id DESC LIMIT 1)
       AND r.finished_at < $2 AND get_byte(uuid_send(r.id), 6) >> 4 = 7
       AND r.status IN ('completed', 'failed', 'canceled', 'expired')
       AND NOT EXISTS (SELECT 1 FROM taskd.runs p
                        WHERE p.id = r.parent_id
                          AND p.status NOT IN ('completed', 'failed', 'canceled', 'expired'))
       FOR UPDATE OF r SKIP LOCKED
), attempts AS (
    DELETE FROM taskd.attempts a USING doomed WHERE a.run_id = doomed.id
), logs AS (
    DELETE FROM taskd.run_logs l USING doomed WHERE l.run_id = doomed.id
), steps AS (
    DELETE FROM taskd.steps s USING doomed WHERE s.run_id = doomed.id
), tokens AS (
    DELETE FROM taskd.wait_tokens t USING doomed WHERE t.run_id = doomed.id
), deleted AS (
    DELETE FROM taskd.runs r USING doomed WHERE r.id = doomed.id RETURNING r.id
)
SELECT (SELECT id FROM span ORDER BY id DESC LIMIT 1) AS last,
       (SELECT count(*) FROM deleted) AS deleted;

-- name: prune_events
WITH doomed AS (
    -- along the primary key: event ids are UUIDv7 too ($3: the id of the cutoff moment)
    SELECT id FROM taskd.events WHERE id < $3 AND created_at < $1
     ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
)
DELETE FROM taskd.events e USING doomed WHERE e.id = doomed.id;

-- name: prune_idempotency_keys
-- Keys past their ttl are free to take over already; their rows go in small batches.
WITH doomed AS (
    SELECT task_id, idempotency_key FROM taskd.idempotency_keys
     WHERE expires_at < now() ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
)
DELETE FROM taskd.idempotency_keys k USING doomed
 WHERE k.task_id = doomed.task_id AND k.idempotency_key = doomed.idempotency_key
   AND k.expires_at < now();

-- name: prune_workers
-- The stop time of a pruned worker is kept in its tasks' last_served_at: the unknown-task
-- timeout counts from when a task became unserved, after its workers' rows are gone too.
-- Tasks rows are locked in id order: two daemons pruning at once cannot deadlock on them.
WITH pruned AS (
    DELETE FROM taskd.workers WHERE stopped_at < $1 RETURNING tasks, stopped_at
), last AS (
    SELECT t.id, max(p.stopped_at) AS at FROM pruned p, unnest(p.tasks) AS t (id) GROUP BY t.id
), locked AS (
    SELECT t.id, last.at FROM taskd.tasks t JOIN last ON last.id = t.id
     ORDER BY t.id
       FOR UPDATE OF t
), stamped AS (
    UPDATE taskd.tasks t SET last_served_at = greatest(t.last_served_at, locked.at)
      FROM locked WHERE t.id = locked.id
)
SELECT count(*) FROM pruned;

-- name: table_stats
-- Live and dead rows of taskd's tables (dead rows are bloat waiting for vacuum).
SELECT relname AS table, n_live_tup AS live, n_dead_tup AS dead
  FROM pg_stat_user_tables WHERE schemaname = 'taskd' ORDER BY relname;

-- name: prune_llm_calls
-- Records of LLM calls started before the cutoff ([retention] llm_calls), oldest first
-- (llm_calls_started_idx). They have no foreign key to runs: costs outlive the runs' history.
WITH doomed AS (
    SELECT id FROM taskd.llm_calls WHERE started_at < $1
     ORDER BY started_at LIMIT $2 FOR UPDATE SKIP LOCKED
)
DELETE FROM taskd.llm_calls c USING doomed WHERE c.id = doomed.id;
