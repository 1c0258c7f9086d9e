-- Idempotency keys, held by the first run created with them (runs.py, waits.py).
-- Loaded by store/idempotency.py (store/queries.py: blocks headed `-- name: NAME`).

-- name: claim_many
-- The keys of a keyed batch (distinct, sorted: two batches sharing keys take them in one
-- order, so they wait for each other instead of deadlocking), each for the run id given
-- with it. Returns the keys this transaction now holds; the others are held by earlier runs.
INSERT INTO taskd.idempotency_keys AS k (task_id, idempotency_key, run_id, expires_at)
SELECT $1, u.key, u.id, now() + make_interval(secs => $4)
  FROM unnest($2::text[], $3::uuid[]) AS u (key, id)
 ORDER BY u.key
ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO UPDATE
   SET run_id = excluded.run_id, expires_at = excluded.expires_at, created_at = now()
 WHERE k.expires_at <= now()
RETURNING k.idempotency_key;

-- name: lookup
-- (a statement of its own, after idempotency.claim_many: its snapshot sees the runs that
-- held a key it waited for)
SELECT idempotency_key, run_id FROM taskd.idempotency_keys
 WHERE task_id = $1 AND idempotency_key = ANY($2::text[]);
