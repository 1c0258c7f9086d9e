-- The console's reads of runs (store/run_scan.py): pages with a bounded scan, counts per
-- status (exact where an index answers, estimated where counting would read the history),
-- the runs a bulk action touches. Loaded by store/run_scan.py (store/queries.py: blocks headed
-- `-- name: NAME`). The store appends the conditions of each filter given ("AND ..."): the
-- statements below are their frames.

-- name: scan_page
-- The runs of the driving set ({driving}: an id range of the primary key, or a list of
-- candidate ids, newest first), at most $1 of them examined (the scan budget); each
-- marked with whether it matches the other filters ({hit}). Returned: the matches, and the
-- last row examined (n = $1, or the last of the set: lead() finds none) so that the caller
-- knows where the scan stopped. Streams: the scan ends at the ($2)-th row returned.
SELECT s.id, s.hit, s.n, s.last
  FROM (SELECT r.id, {hit} AS hit, row_number() OVER w AS n, lead(r.id) OVER w IS NULL AS last
          FROM taskd.runs r
         WHERE {driving}
        WINDOW w AS (ORDER BY r.id DESC)
         ORDER BY r.id DESC
         LIMIT $1) AS s
 WHERE s.hit OR s.n = $1 OR s.last
 ORDER BY s.id DESC
 LIMIT $2

-- name: summaries
-- The listed runs, by id (RunSummary: without payload and output).
SELECT r.id, r.task_id, r.queue, r.status, r.error, r.priority, r.run_at,
       r.attempt, coalesce(r.max_attempts, t.max_attempts) AS max_attempts, r.tags,
       r.created_at, r.started_at, r.finished_at, r.worker_id, r.expires_at,
       r.cancel_requested_at, r.replayed_from, r.event_id, r.schedule_id, r.scheduled_for,
       r.metadata, r.parent_id, nullif(r.concurrency_key, '') AS concurrency_key, r.retry,
       r.max_duration, r.version
  FROM taskd.runs r LEFT JOIN taskd.tasks t ON t.id = r.task_id
 WHERE r.id = ANY($1::uuid[])
 ORDER BY r.id DESC

-- name: probe_statuses
-- Candidates: the runs of these unfinished statuses, each through its partial index
-- (runs_claim_idx, runs_waiting_idx, runs_lease_idx: an executing run holds a lease), at most
-- $2 (more: not a small set).
(SELECT id FROM taskd.runs WHERE 'queued' = ANY($1::text[]) AND status = 'queued' LIMIT $2)
UNION ALL
(SELECT id FROM taskd.runs WHERE 'waiting' = ANY($1::text[]) AND status = 'waiting' LIMIT $2)
UNION ALL
(SELECT id FROM taskd.runs
  WHERE 'executing' = ANY($1::text[]) AND lease_expires_at IS NOT NULL AND status = 'executing'
  LIMIT $2)

-- name: probe_task
SELECT id FROM taskd.runs WHERE task_id = $1 LIMIT $2

-- name: probe_tag
SELECT id FROM taskd.runs WHERE tags @> ARRAY[$1::text] AND tags <> '{}' LIMIT $2

-- name: probe_event
SELECT r.id FROM taskd.runs r
 WHERE r.event_id IN (SELECT e.id FROM taskd.events e WHERE e.name = $1) LIMIT $2

-- name: probe_schedule
SELECT id FROM taskd.runs WHERE schedule_id = $1 LIMIT $2

-- name: probe_error_group
SELECT DISTINCT run_id FROM taskd.attempts WHERE fingerprint = $1 LIMIT $2

-- name: count_scan
-- An exact count per status of the runs matching ({hit}) among the driving set, if the set
-- holds at most $1 rows (scanned <= $1); else the caller estimates.
SELECT count(*) AS scanned,
       count(*) FILTER (WHERE s.hit AND s.status = 'queued') AS queued,
       count(*) FILTER (WHERE s.hit AND s.status = 'executing') AS executing,
       count(*) FILTER (WHERE s.hit AND s.status = 'waiting') AS waiting,
       count(*) FILTER (WHERE s.hit AND s.status = 'completed') AS completed,
       count(*) FILTER (WHERE s.hit AND s.status = 'failed') AS failed,
       count(*) FILTER (WHERE s.hit AND s.status = 'canceled') AS canceled,
       count(*) FILTER (WHERE s.hit AND s.status = 'expired') AS expired
  FROM (SELECT r.status, {hit} AS hit FROM taskd.runs r WHERE {driving}
         ORDER BY r.id DESC LIMIT $1 + 1) AS s

-- name: count_status
-- The exact number of runs of one unfinished status matching the filters, through the
-- status's partial index, up to $1 (then the caller estimates).
SELECT count(*) FROM (SELECT 1 FROM taskd.runs r WHERE {status} AND {hit} LIMIT $1) AS s

-- name: estimate
-- The planner's estimate of the runs matching (EXPLAIN: statistics, no scan).
EXPLAIN (FORMAT JSON) SELECT 1 FROM taskd.runs r WHERE {hit}

-- name: count_matching
-- How many runs match, up to $1: an exact count that stops at the cap.
SELECT count(*) FROM (SELECT 1 FROM taskd.runs r WHERE {driving} AND {hit} LIMIT $1) AS s

-- name: count_bounded
-- The matches among the newest $1 runs of the driving set, and how many were read.
SELECT count(*) AS scanned, count(*) FILTER (WHERE s.hit) AS hits
  FROM (SELECT {hit} AS hit FROM taskd.runs r WHERE {driving} ORDER BY r.id DESC LIMIT $1) AS s

-- name: matching_ids
-- The next batch of matching runs below a cursor, newest first (bulk actions).
SELECT r.id FROM taskd.runs r WHERE {driving} AND {hit} ORDER BY r.id DESC LIMIT $1
