-- Events (taskd.send_event) and the tasks they start (subscriptions).
-- Loaded by store/events.py (store/queries.py: blocks headed `-- name: NAME`).

-- name: send
SELECT taskd.send_event($1, $2::text::jsonb);

-- name: list
SELECT id, name, payload, runs, created_at FROM taskd.events
 WHERE ($1::text IS NULL OR name = $1)
 ORDER BY id DESC
 LIMIT $2;

-- name: subscription_clear
-- (with events.subscription_add, in one transaction: these tasks' subscriptions become exactly
-- the given pairs; a name removed from the code stops starting the task)
DELETE FROM taskd.subscriptions WHERE task_id = ANY($1::text[]);

-- name: subscription_retire_unserved
-- Subscriptions of tasks that no live worker serves and that none has served for $1 seconds
-- (their code was removed): an event no longer creates runs nobody will run. A daemon that
-- serves the task again subscribes it again at its start (events.sync_subscriptions in events.py).
DELETE FROM taskd.subscriptions s
 WHERE NOT EXISTS (SELECT 1 FROM taskd.task_service t
                    WHERE t.task_id = s.task_id
                      AND (t.live OR t.served_until > now() - make_interval(secs => $1)))
RETURNING s.event_name, s.task_id;

-- name: subscription_list
SELECT task_id, array_agg(event_name ORDER BY event_name) AS events
  FROM taskd.subscriptions GROUP BY task_id;

-- name: subscription_add
INSERT INTO taskd.subscriptions (event_name, task_id)
SELECT * FROM unnest($1::text[], $2::text[])
ON CONFLICT DO NOTHING;
