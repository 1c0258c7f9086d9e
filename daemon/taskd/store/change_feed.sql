-- The fleet's change feed (worker/change_feed.py): who streams, what changed while a
-- reader was away. Loaded by store/change_feed.py (store/queries.py: blocks headed
-- `-- name: NAME`). None of these runs while no daemon has an /api/stream client, except
-- `streamers`, one read of the server's shared memory (no table) every few seconds.

-- name: streamers
-- The sessions of other daemons that have a stream client (application_name taskd-stream
-- on this database), not counting this daemon's own ($1: its feed connection's pid).
SELECT count(*)::int FROM pg_stat_activity
 WHERE application_name = 'taskd-stream' AND datname = current_database() AND pid <> $1;

-- name: set_streaming
-- Advertise (or stop advertising) that this daemon has a stream client.
SELECT set_config('application_name', CASE WHEN $1::boolean THEN 'taskd-stream' ELSE 'taskd' END,
                  false);

-- name: announce
-- Tell the other daemons at once that a daemon started streaming (they look again now).
SELECT pg_notify('taskd_stream_watch', '');

-- name: publish
-- One round trip for a batch of change notifications (each payload under 8000 bytes).
SELECT count(pg_notify('taskd_changes', p)) FROM unnest($1::text[]) AS p;

-- name: metadata
-- The metadata of runs whose change was too large for a notification.
SELECT id, metadata FROM taskd.runs WHERE id = ANY($1::uuid[]);

-- name: finished_since
-- The runs that finished after $1 (epoch seconds), for a reader whose LISTEN connection
-- was down (the notifications sent meanwhile are lost); not the ones this daemon finished
-- ($2: its worker id, which its own stream showed). Read only on such a reconnect, while
-- someone streams: a scan of the runs by finished_at, at most $3 rows.
SELECT r.id, r.task_id, r.status, r.attempt, extract(epoch FROM r.finished_at)::float8 AS at,
       r.error
  FROM taskd.runs r
  LEFT JOIN taskd.attempts a ON a.run_id = r.id AND a.attempt = r.attempt
 WHERE r.finished_at > to_timestamp($1)
   AND r.status IN ('completed', 'failed', 'canceled', 'expired')
   AND a.worker_id IS DISTINCT FROM $2
 ORDER BY r.finished_at
 LIMIT $3;
