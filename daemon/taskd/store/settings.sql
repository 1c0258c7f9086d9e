-- Cluster-wide settings a daemon records for clients (max_payload_bytes).
-- Loaded by store/settings.py (store/queries.py: blocks headed `-- name: NAME`).

-- name: get
SELECT value FROM taskd.settings WHERE key = $1;

-- name: put
INSERT INTO taskd.settings (key, value) VALUES ($1, $2)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;
