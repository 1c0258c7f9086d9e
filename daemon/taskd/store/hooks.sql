-- Inbound webhooks (taskd.hooks): a verified delivery becomes one event, once per delivery id.
-- The delivery's key is held in taskd.idempotency_keys under task_id 'taskd:hooks' (no task
-- has that id), its run_id column holding the event's id; keys past their expiry are pruned
-- with the others (retention.prune_idempotency_keys).
-- Loaded by store/hooks.py (store/queries.py: blocks headed `-- name: NAME`).

-- name: hold_key
-- The delivery's key for this transaction (a placeholder id until its event exists); no row:
-- an earlier delivery holds it (a concurrent one: this statement waited for its commit).
INSERT INTO taskd.idempotency_keys AS k (task_id, idempotency_key, run_id, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4))
ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO UPDATE
   SET run_id = excluded.run_id, expires_at = excluded.expires_at, created_at = now()
 WHERE k.expires_at <= now()
RETURNING true;

-- name: held_by
-- (a statement of its own, after hold_key: its snapshot sees the delivery that held the key)
SELECT run_id FROM taskd.idempotency_keys WHERE task_id = $1 AND idempotency_key = $2;

-- name: send_keyed
-- taskd.send_event, and the held key now names the event.
WITH sent AS (SELECT taskd.send_event($3, $4::text::jsonb) AS id)
UPDATE taskd.idempotency_keys k SET run_id = sent.id
  FROM sent
 WHERE k.task_id = $1 AND k.idempotency_key = $2
RETURNING sent.id;
