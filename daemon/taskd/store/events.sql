-- Events (taskd.send_event) and the tasks they start (subscriptions).
-- Loaded by store/events.py (store/queries.py: blocks headed `-- name: NAME`).

-- name: send
SELECT taskd.send_event($1, $2::text::jsonb);

-- name: list
SELECT id, name, payload, runs, created_at FROM taskd.events
 WHERE ($1::text IS NULL OR name = $1)
 ORDER BY id DESC
 LIMIT $2;

-- name: page
-- A page of events, newest first: EventStore.page puts the filters given (name = $n, id < $n:
-- the keyset cursor) in place of WHERE_CONDITIONS and the limit's parameter for $LIMIT. Along
-- events_pkey, or events_name_idx (name, id DESC) for one name.
SELECT id, name, payload, runs, created_at FROM taskd.events
 WHERE WHERE_CONDITIONS
 ORDER BY id DESC
 LIMIT $LIMIT;

-- name: run_links
-- The first $2 runs (oldest first) of each event in $1 (runs_event_idx).
SELECT ev.id AS event_id, r.id, r.task_id, r.status
  FROM unnest($1::uuid[]) AS ev (id)
 CROSS JOIN LATERAL (SELECT id, task_id, status FROM taskd.runs
                      WHERE event_id = ev.id ORDER BY id LIMIT $2) AS r
 ORDER BY ev.id DESC, r.id;

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
