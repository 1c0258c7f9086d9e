-- Wait tokens: created by wait.create_token, awaited by wait.for_token, completed by an
-- application (taskd.complete_token).
-- Loaded by store/tokens.py (store/queries.py: blocks headed `-- name: NAME`).

-- name: create
-- A retry of a creation whose commit went unknown (the connection lost) finds the first
-- try's token (same id): nothing is returned, and tokens.expiry reads it.
INSERT INTO taskd.wait_tokens (id, run_id, expires_at)
VALUES ($1, $2, now() + make_interval(secs => $3))
ON CONFLICT (id) DO NOTHING
RETURNING expires_at;

-- name: expiry
SELECT expires_at FROM taskd.wait_tokens WHERE id = $1 AND run_id = $2;

-- name: mark_awaited
-- wait.for_token ($2: the run) reads its token. Its own run marks it awaited (a completion
-- then queues the run if it waits, or the wake loop does once it waits), and takes completed
-- data as seen. A token another transaction holds (a completion not yet committed) is read as
-- last committed, not waited for: held. now: the database's clock, which times tokens out.
WITH locked AS (
    SELECT t.id FROM taskd.wait_tokens t WHERE t.id = $1 FOR UPDATE SKIP LOCKED
), marked AS (
    UPDATE taskd.wait_tokens t
       SET awaited = t.awaited OR t.run_id = $2,
           unseen = t.unseen AND NOT (t.status = 'completed' AND t.run_id = $2)
      FROM locked WHERE t.id = locked.id
    RETURNING t.status, t.data, t.expires_at
)
SELECT m.status, m.data, m.expires_at, false AS held, now() AS now FROM marked m
UNION ALL
SELECT t.status, t.data, t.expires_at, true, now() FROM taskd.wait_tokens t
 WHERE t.id = $1 AND NOT EXISTS (SELECT FROM locked);

-- name: time_out
-- A pending token past its expiry times out (once). A token another transaction holds (being
-- completed) is skipped: its run reads it again.
UPDATE taskd.wait_tokens SET status = 'timed_out', completed_at = now()
 WHERE id = (SELECT t.id FROM taskd.wait_tokens t WHERE t.id = $1 FOR UPDATE SKIP LOCKED)
   AND status = 'pending' AND expires_at <= now()
RETURNING status;

-- name: complete
SELECT taskd.complete_token($1, $2::text::jsonb);
