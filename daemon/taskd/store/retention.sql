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
-- Finished runs older than the retention, oldest first, in one small batch: along the
-- primary key (ids begin with their creation time, $1 is the id of the cutoff moment), with
-- their attempts, log lines, steps and wait tokens. SKIP LOCKED: never waits on a run
-- something else holds. Only UUIDv7 ids tell their creation time: a hand-made id of another
-- version may sort below the cutoff whatever its age, and is never pruned.
-- $4: the last id the pass deleted (NULL at its start; returned ids give it). Each batch
-- starts after the last one, so the old runs that are not finished (queued runs of a task no
-- daemon serves, a paused queue, a long wait) are read once per pass, not once per batch; a
-- run skipped as locked waits for the next pass.
-- A child whose parent has not finished stays, however old: the parent reads the outcomes
-- of its children when it resumes (trigger_and_wait), and may wait longer than the retention.
WITH doomed AS (
    SELECT id FROM taskd.runs r
     WHERE id < $1 AND id > coalesce($4, '00000000-0000-0000-0000-000000000000'::uuid)
       AND finished_at < $2 AND get_byte(uuid_send(id), 6) >> 4 = 7
       AND status IN ('completed', 'failed', 'canceled', 'expired')
       AND NOT EXISTS (SELECT 1 FROM taskd.runs p
                        WHERE p.id = r.parent_id
                          AND p.status NOT IN ('completed', 'failed', 'canceled', 'expired'))
     ORDER BY id
     LIMIT $3
       FOR UPDATE OF r SKIP LOCKED
), attempts AS (
    DELETE FROM taskd.attempts a USING doomed WHERE a.run_id = doomed.id
), logs AS (
    DELETE FROM taskd.run_logs l USING doomed WHERE l.run_id = doomed.id
), steps AS (
    DELETE FROM taskd.steps s USING doomed WHERE s.run_id = doomed.id
), tokens AS (
    DELETE FROM taskd.wait_tokens t USING doomed WHERE t.run_id = doomed.id
)
DELETE FROM taskd.runs r USING doomed WHERE r.id = doomed.id RETURNING r.id;

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
