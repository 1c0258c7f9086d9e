-- The console's charts (GET /api/stats): runs started, completed and failed per bucket of time
-- with their wait, and the queue depth samples a fleet-wide chore writes once a minute.
-- Loaded by store/stats.py (store/queries.py: blocks headed `-- name: NAME`).

-- name: sample_queues
-- One sample per queue for the minute $1, written by the first daemon that looks at it: the
-- others find the minute written (a probe of the primary key) or its advisory lock taken (a
-- transaction lock, two-int form: no worker's bigint lock key can be the same) and write
-- nothing; ON CONFLICT keeps a second sample out even if two looks interleave. The one that
-- writes also deletes the samples older than two days ($2 seconds), along the primary key.
-- Depths as /api/queues counts them: queued runs by run_at against now(), executing = leased.
-- At most 1,000 queues (the busiest) per minute.
WITH turn AS MATERIALIZED (
    SELECT 1 AS go
     WHERE NOT EXISTS (SELECT 1 FROM taskd.queue_samples WHERE at = $1)
       AND pg_try_advisory_xact_lock(31325, 3)
), queued AS (
    SELECT queue,
           count(*) FILTER (WHERE run_at <= now()) AS due,
           count(*) FILTER (WHERE run_at > now()) AS delayed,
           min(run_at) FILTER (WHERE run_at <= now()) AS oldest_due
      FROM taskd.runs
     WHERE status = 'queued' AND EXISTS (SELECT FROM turn)
     GROUP BY queue
), executing AS (
    SELECT queue, count(*) AS executing
      FROM taskd.runs
     WHERE lease_expires_at IS NOT NULL AND EXISTS (SELECT FROM turn)
     GROUP BY queue
), names AS (
    SELECT queue FROM queued
    UNION SELECT queue FROM executing
    UNION SELECT name FROM taskd.queues WHERE EXISTS (SELECT FROM turn)
), pruned AS (
    DELETE FROM taskd.queue_samples
     WHERE at < $1 - make_interval(secs => $2) AND EXISTS (SELECT FROM turn)
)
INSERT INTO taskd.queue_samples AS s (at, queue, due, delayed, executing, oldest_due_age)
SELECT $1, n.queue, coalesce(q.due, 0), coalesce(q.delayed, 0), coalesce(e.executing, 0),
       extract(epoch FROM now() - q.oldest_due)::float8
  FROM names n
  LEFT JOIN queued q ON q.queue = n.queue
  LEFT JOIN executing e ON e.queue = n.queue
 ORDER BY coalesce(q.due, 0) + coalesce(q.delayed, 0) + coalesce(e.executing, 0) DESC, n.queue
 LIMIT 1000
ON CONFLICT (at, queue) DO NOTHING;

-- name: run_buckets
-- Per bucket of $4 seconds from $2 to $3: runs whose (latest) attempt started in it, with the
-- wait from run_at to that start (p50, p95, seconds), and runs that completed or failed in it.
-- Read along the primary key from $1, the first id of a moment before $2 (ids are UUIDv7, by
-- creation time): the window's runs and those created a lookback before it, no other index.
-- $5 task, $6 queue: NULL for all.
SELECT floor(extract(epoch FROM e.at - $2) / $4)::int AS bucket,
       count(*) FILTER (WHERE e.kind = 'started') AS started,
       count(*) FILTER (WHERE e.kind = 'completed') AS completed,
       count(*) FILTER (WHERE e.kind = 'failed') AS failed,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY e.wait) AS wait_p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY e.wait) AS wait_p95
  FROM taskd.runs r
 CROSS JOIN LATERAL (
       VALUES ('started', r.attempt_started_at,
               greatest(0, extract(epoch FROM r.attempt_started_at - r.run_at))::float8),
              (r.status, r.finished_at, NULL::float8)
       ) AS e (kind, at, wait)
 WHERE r.id >= $1
   AND ($5::text IS NULL OR r.task_id = $5)
   AND ($6::text IS NULL OR r.queue = $6)
   AND (r.attempt_started_at >= $2 OR r.finished_at >= $2)
   AND e.kind IN ('started', 'completed', 'failed')
   AND e.at >= $2 AND e.at < $3
 GROUP BY 1;

-- name: depth_buckets
-- The queue samples from $1 to $2 per bucket of $3 seconds, the peak of each figure within
-- the bucket, for the $5 queues (NULL: all) with the highest peak in the range, at most $4.
WITH peaks AS (
    SELECT queue, max(due + delayed + executing) AS peak
      FROM taskd.queue_samples
     WHERE at >= $1 AND at < $2 AND ($5::text IS NULL OR queue = $5)
     GROUP BY queue
), chosen AS (
    SELECT queue FROM peaks ORDER BY peak DESC, queue LIMIT $4
)
SELECT to_timestamp(floor(extract(epoch FROM s.at) / $3) * $3) AS at, s.queue,
       max(s.due) AS due, max(s.delayed) AS delayed, max(s.executing) AS executing,
       max(s.oldest_due_age) AS oldest_due_age,
       (SELECT count(*) FROM peaks) AS queues
  FROM taskd.queue_samples s
  JOIN chosen c ON c.queue = s.queue
 WHERE s.at >= $1 AND s.at < $2
 GROUP BY 1, 2
 ORDER BY 1, 2;
