-- Outbound status webhooks: subscriptions and their deliveries (migration 0018 holds the
-- triggers that capture run events and chain each (subscription, run)'s deliveries).
-- Loaded by store/webhooks.py (store/queries.py: blocks headed `-- name: NAME`).

-- name: upsert_config
-- A [[webhooks]] table of the config, by name. A new secret in the config rotates: the one
-- before signs too for $9 seconds. enabled = false disables it (reason: the config); true
-- re-enables only what the config disabled (not a subscription disabled for failing).
INSERT INTO taskd.webhook_subscriptions AS s
       (name, url, events, tasks, queues, tags, secret, source, enabled, disabled_reason)
VALUES ($1, $2, $3, $4, $5, $6, $7, 'config', $8,
        CASE WHEN $8 THEN NULL ELSE 'enabled = false in the config' END)
ON CONFLICT (name) DO UPDATE
   SET url = excluded.url, events = excluded.events, tasks = excluded.tasks,
       queues = excluded.queues, tags = excluded.tags, source = 'config',
       secret = excluded.secret,
       previous_secret = CASE WHEN s.secret = excluded.secret THEN s.previous_secret ELSE s.secret END,
       previous_secret_expires_at = CASE WHEN s.secret = excluded.secret
                                         THEN s.previous_secret_expires_at
                                         ELSE now() + make_interval(secs => $9) END,
       enabled = CASE WHEN NOT $8 THEN false
                      WHEN s.disabled_reason LIKE '%the config' THEN true
                      ELSE s.enabled END,
       disabled_reason = CASE WHEN NOT $8 THEN 'enabled = false in the config'
                              WHEN s.disabled_reason LIKE '%the config' THEN NULL
                              ELSE s.disabled_reason END,
       updated_at = now()
RETURNING s.name;

-- name: disable_unlisted
-- Config-sourced subscriptions no longer in the config: disabled (kept with their deliveries).
UPDATE taskd.webhook_subscriptions
   SET enabled = false, disabled_reason = 'no longer in the config', updated_at = now()
 WHERE source = 'config' AND NOT (name = ANY ($1::text[]))
   AND disabled_reason IS DISTINCT FROM 'no longer in the config'
RETURNING name;

-- name: create
INSERT INTO taskd.webhook_subscriptions (name, url, events, tasks, queues, tags, secret, source)
VALUES ($1, $2, $3, $4, $5, $6, $7, 'api')
ON CONFLICT (name) DO NOTHING
RETURNING id;

-- name: list
-- Without secrets; deliveries counted by status.
SELECT s.id, s.name, s.url, s.events, s.tasks, s.queues, s.tags, s.source, s.enabled,
       s.paused, s.disabled_reason, s.failing_since, s.created_at, s.updated_at,
       (s.previous_secret_expires_at > now()) IS TRUE AS rotating,
       (SELECT count(*) FROM taskd.webhook_deliveries d
         WHERE d.subscription_id = s.id AND d.status IN ('pending', 'sending')) AS pending,
       (SELECT count(*) FROM taskd.webhook_deliveries d
         WHERE d.subscription_id = s.id AND d.status = 'dead') AS dead
  FROM taskd.webhook_subscriptions s
 ORDER BY s.name;

-- name: set_paused
UPDATE taskd.webhook_subscriptions SET paused = $2, updated_at = now()
 WHERE name = $1 RETURNING name;

-- name: resume
-- Resumes a paused subscription and enables a disabled one (its failures forgotten).
UPDATE taskd.webhook_subscriptions
   SET paused = false, enabled = true, disabled_reason = NULL, failing_since = NULL,
       updated_at = now()
 WHERE name = $1 RETURNING name;

-- name: delete
DELETE FROM taskd.webhook_subscriptions WHERE name = $1 RETURNING name;

-- name: rotate
-- The new secret signs from now on; the old one too, for $3 seconds.
UPDATE taskd.webhook_subscriptions
   SET previous_secret = secret, previous_secret_expires_at = now() + make_interval(secs => $3),
       secret = $2, updated_at = now()
 WHERE name = $1 RETURNING name;

-- name: deliveries
-- Newest first; the store appends one condition per filter given, then the order and limit.
SELECT d.id, s.name AS subscription, d.run_id, d.seq, d.event, d.status, d.attempts,
       d.last_status, d.last_error, d.delivery_run_id, d.created_at, d.delivered_at
  FROM taskd.webhook_deliveries d JOIN taskd.webhook_subscriptions s ON s.id = d.subscription_id
 WHERE true

-- name: delivery
SELECT d.id, s.name AS subscription, d.run_id, d.seq, d.event, d.status, d.attempts,
       d.last_status, d.last_error, d.delivery_run_id, d.created_at, d.delivered_at, d.payload
  FROM taskd.webhook_deliveries d JOIN taskd.webhook_subscriptions s ON s.id = d.subscription_id
 WHERE d.id = $1;

-- name: redeliver
-- A delivered or dead delivery sent again (same webhook-id) by a new run; its status comes
-- back: NULL when it is not there, its status when it is still being sent.
WITH target AS (
    SELECT d.id, d.status FROM taskd.webhook_deliveries d WHERE d.id = $1 FOR UPDATE
)
SELECT t.status AS was,
       CASE WHEN t.status IN ('delivered', 'dead') THEN taskd.webhook_start_delivery(t.id) END
           AS delivery_run_id
  FROM target t;

-- name: redeliver_dead
-- Every dead delivery of a subscription sent again, oldest first.
SELECT taskd.webhook_start_delivery(d.id) AS delivery_run_id
  FROM (SELECT w.id FROM taskd.webhook_deliveries w
          JOIN taskd.webhook_subscriptions s ON s.id = w.subscription_id
         WHERE s.name = $1 AND w.status = 'dead'
         ORDER BY w.id
           FOR UPDATE OF w) d;

-- name: to_send
-- What a delivery run needs: the body, the URL, the secrets that sign (the previous one while
-- it is valid), whether the subscription takes deliveries. $2: the delivery run (a run that
-- is no longer the delivery's, after a redelivery, finds nothing).
SELECT d.id, d.payload, d.status, s.id AS subscription_id, s.name, s.url, s.enabled,
       s.paused, s.disabled_reason, s.secret,
       CASE WHEN s.previous_secret_expires_at > now() THEN s.previous_secret END
           AS previous_secret
  FROM taskd.webhook_deliveries d JOIN taskd.webhook_subscriptions s ON s.id = d.subscription_id
 WHERE d.id = $1 AND d.delivery_run_id = $2;

-- name: record_attempt
-- One HTTP attempt: counted on the delivery; a success clears the subscription's failing_since,
-- a failure starts it. A subscription failing for longer than $5 seconds (or answered 410
-- Gone: $6) is disabled, the reason returned (was_enabled: it was enabled before). A success
-- of a subscription that was not failing leaves its row alone: concurrent deliveries to one
-- receiver do not queue on one hot row.
WITH old AS (
    SELECT s.enabled, s.disabled_reason, s.name FROM taskd.webhook_subscriptions s
      JOIN taskd.webhook_deliveries d ON d.subscription_id = s.id
     WHERE d.id = $1
), delivery AS (
    UPDATE taskd.webhook_deliveries
       SET attempts = attempts + 1, last_status = $3, last_error = $4
     WHERE id = $1
    RETURNING subscription_id
), sub AS (
    UPDATE taskd.webhook_subscriptions s
       SET failing_since = CASE WHEN $2 THEN NULL ELSE coalesce(s.failing_since, now()) END,
           enabled = CASE WHEN $6::text IS NOT NULL THEN false
                          WHEN NOT $2 AND s.failing_since <= now() - make_interval(secs => $5)
                          THEN false ELSE s.enabled END,
           disabled_reason = CASE
               WHEN NOT s.enabled THEN s.disabled_reason
               WHEN $6::text IS NOT NULL THEN $6::text
               WHEN NOT $2 AND s.failing_since <= now() - make_interval(secs => $5)
               THEN 'its deliveries have failed since '
                    || to_char(s.failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
                    || ' UTC (last: ' || coalesce($4, 'HTTP ' || $3) || ')'
           END
      FROM delivery
     WHERE s.id = delivery.subscription_id
       AND (NOT $2 OR s.failing_since IS NOT NULL OR $6::text IS NOT NULL)
    RETURNING s.enabled, s.disabled_reason
)
SELECT coalesce(sub.enabled, old.enabled) AS enabled,
       CASE WHEN sub.enabled IS NULL THEN old.disabled_reason ELSE sub.disabled_reason END
           AS disabled_reason,
       old.name, old.enabled AS was_enabled
  FROM old LEFT JOIN sub ON true;

-- name: prune
-- Finished deliveries (delivered or dead) made before $3, at most $2 per statement, read
-- through the primary key up to $1 (a UUIDv7 of the cutoff: ids sort by creation). SKIP
-- LOCKED: a delivery being redelivered is left for the next pass, never waited for.
WITH doomed AS (
    SELECT d.id FROM taskd.webhook_deliveries d
     WHERE d.id < $1 AND d.created_at < $3 AND d.status IN ('delivered', 'dead')
     ORDER BY d.id LIMIT $2
       FOR UPDATE SKIP LOCKED
)
DELETE FROM taskd.webhook_deliveries w USING doomed WHERE w.id = doomed.id;
