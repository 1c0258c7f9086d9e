-- The console's charts (GET /api/stats): queue depth and runs started, completed and failed
-- over time. Loaded by store/stats.py (store/queries.py: blocks headed `-- name: NAME`).

-- name: sample_minute
-- The minute $1, written by the first daemon that looks at it, in this one statement: its row
-- in stats_minutes is the turn (a second daemon's insert of the same minute waits for the
-- first to commit, then does nothing, and so does the rest of its statement). The writer
-- records the depth of every queue (as /api/queues counts them: queued runs by run_at against
-- now(), executing = leased; at most 1,000 queues, the busiest), rolls up the runs of the
-- minutes since the previous writer's roll-up (at most $5 seconds back) up to the minute
-- before $1 (a minute's grace for outcomes still being committed), and deletes what is older
-- than $2 seconds. The roll-up reads taskd.runs along its primary key from the runs created $3
-- seconds before its first minute (ids are UUIDv7, by creation time); $4: the bounds of the
-- wait histogram (seconds); $6: the id of $1 less $5 and $3. The command tag counts the queue
-- samples written.
WITH turn AS (
    INSERT INTO taskd.stats_minutes AS m (at, rolled_up_to)
    VALUES ($1::timestamptz, $1::timestamptz - interval '1 minute')
    ON CONFLICT (at) DO NOTHING
    RETURNING m.at, m.rolled_up_to
), span AS (
    SELECT t.rolled_up_to AS hi,
           greatest(coalesce((SELECT max(s.rolled_up_to) FROM taskd.stats_minutes s
                               WHERE s.at < $1::timestamptz),
                             $1::timestamptz - make_interval(secs => $5)),
                    $1::timestamptz - make_interval(secs => $5)) AS lo
      FROM turn t
), seen AS MATERIALIZED (
    SELECT r.attempt_started_at, r.run_at, r.status, r.finished_at, r.task_id, r.queue
      FROM taskd.runs r, span
     -- $6: the same bound at its earliest ($1 less $5 and $3), a constant the planner can
     -- estimate: with the bound below alone (known only at run time) it expected a third of
     -- the table and read all of it, every minute (10 GB with 10,000,000 runs of history)
     WHERE r.id >= $6::uuid
       AND r.id >= (SELECT (lpad(to_hex((extract(epoch FROM lo - make_interval(secs => $3))
                                         * 1000)::bigint), 12, '0')
                            || '70008000000000000000')::uuid FROM span)
       AND ((r.attempt_started_at >= span.lo AND r.attempt_started_at < span.hi)
            OR (r.finished_at >= span.lo AND r.finished_at < span.hi))
), starts AS (
    SELECT date_trunc('minute', attempt_started_at) AS at, task_id, queue,
           width_bucket(greatest(0, extract(epoch FROM attempt_started_at - run_at))::float8,
                        $4::float8[]) AS i,
           count(*) AS n
      FROM seen, span
     WHERE attempt_started_at >= span.lo AND attempt_started_at < span.hi
     GROUP BY 1, 2, 3, 4
), started_bins AS (
    -- per task and queue, per task, per queue, in all ('' for every task or queue: neither
    -- column is ever empty in taskd.runs)
    SELECT at, coalesce(task_id, '') AS task_id, coalesce(queue, '') AS queue, i,
           sum(n) AS n
      FROM starts
     GROUP BY GROUPING SETS ((at, task_id, queue, i), (at, task_id, i), (at, queue, i), (at, i))
), started AS (
    SELECT at, task_id, queue, sum(n)::int AS started, jsonb_object_agg(i, n) AS waits
      FROM started_bins GROUP BY 1, 2, 3
), ended AS (
    SELECT at, coalesce(task_id, '') AS task_id, coalesce(queue, '') AS queue,
           count(*) FILTER (WHERE status = 'completed')::int AS completed,
           count(*) FILTER (WHERE status = 'failed')::int AS failed
      FROM (SELECT date_trunc('minute', finished_at) AS at, task_id, queue, status
              FROM seen, span
             WHERE finished_at >= span.lo AND finished_at < span.hi
               AND status IN ('completed', 'failed')) AS ends
     GROUP BY GROUPING SETS ((at, task_id, queue), (at, task_id), (at, queue), (at))
), rolled AS (
    INSERT INTO taskd.run_minutes (at, task_id, queue, started, completed, failed, waits)
    SELECT coalesce(s.at, e.at), coalesce(s.task_id, e.task_id), coalesce(s.queue, e.queue),
           coalesce(s.started, 0), coalesce(e.completed, 0), coalesce(e.failed, 0),
           coalesce(s.waits, '{}')
      FROM started s
      FULL JOIN ended e ON e.at = s.at AND e.task_id = s.task_id AND e.queue = s.queue
    ON CONFLICT (task_id, queue, at) DO NOTHING
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
), pruned_minutes AS (
    DELETE FROM taskd.stats_minutes
     WHERE at < $1::timestamptz - make_interval(secs => $2) AND EXISTS (SELECT FROM turn)
), pruned_runs AS (
    DELETE FROM taskd.run_minutes
     WHERE at < $1::timestamptz - make_interval(secs => $2) AND EXISTS (SELECT FROM turn)
), pruned_samples AS (
    DELETE FROM taskd.queue_samples
     WHERE at < $1::timestamptz - make_interval(secs => $2) AND EXISTS (SELECT FROM turn)
)
INSERT INTO taskd.queue_samples AS s (at, queue, due, delayed, executing, oldest_due_age)
SELECT $1::timestamptz, n.queue, coalesce(q.due, 0), coalesce(q.delayed, 0),
       coalesce(e.executing, 0),
       extract(epoch FROM now() - q.oldest_due)::float8
  FROM names n
  LEFT JOIN queued q ON q.queue = n.queue
  LEFT JOIN executing e ON e.queue = n.queue
 ORDER BY coalesce(q.due, 0) + coalesce(q.delayed, 0) + coalesce(e.executing, 0) DESC, n.queue
 LIMIT 1000
ON CONFLICT (at, queue) DO NOTHING;

-- name: database_now
-- The database's clock: every daemon's sampler names the minute by it, not by its own clock
-- (a daemon whose clock runs ahead would write a minute not yet over, and its runs for good).
SELECT now();

-- name: rolled_up_to
-- Where the roll-ups end: run_minutes holds every minute before it (NULL: none written).
SELECT max(rolled_up_to) FROM taskd.stats_minutes;

-- name: run_buckets
-- Per bucket of $4 seconds (aligned on $5) from $2 to $3: runs whose (latest) attempt started
-- in it, with the wait from run_at to that start (p50, p95 and a histogram over the bounds $8,
-- seconds), and runs that completed or failed in it. Read along the primary key from $1, the
-- first id of a moment before $2 (ids are UUIDv7, by creation time): the range's runs and those
-- created a lookback before it, no other index. $6 task, $7 queue: NULL for all.
WITH seen AS MATERIALIZED (
    SELECT attempt_started_at, run_at, status, finished_at
      FROM taskd.runs
     WHERE id >= $1
       AND ($6::text IS NULL OR task_id = $6)
       AND ($7::text IS NULL OR queue = $7)
       AND (attempt_started_at >= $2 OR finished_at >= $2)
), starts AS (
    SELECT date_bin(make_interval(secs => $4), attempt_started_at, $5) AS at,
           greatest(0, extract(epoch FROM attempt_started_at - run_at))::float8 AS wait
      FROM seen
     WHERE attempt_started_at >= $2 AND attempt_started_at < $3
), started AS (
    SELECT at, count(*)::int AS started,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY wait) AS wait_p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY wait) AS wait_p95
      FROM starts GROUP BY at
), histogram AS (
    SELECT at, array_agg(i ORDER BY i) AS wait_bins, array_agg(n ORDER BY i) AS wait_counts
      FROM (SELECT at, width_bucket(wait, $8::float8[]) AS i, count(*)::int AS n
              FROM starts GROUP BY 1, 2) AS bins
     GROUP BY at
), ended AS (
    SELECT date_bin(make_interval(secs => $4), finished_at, $5) AS at,
           count(*) FILTER (WHERE status = 'completed')::int AS completed,
           count(*) FILTER (WHERE status = 'failed')::int AS failed
      FROM seen
     WHERE finished_at >= $2 AND finished_at < $3 AND status IN ('completed', 'failed')
     GROUP BY 1
)
SELECT coalesce(s.at, e.at) AS at, coalesce(s.started, 0) AS started,
       coalesce(e.completed, 0) AS completed, coalesce(e.failed, 0) AS failed,
       s.wait_p50, s.wait_p95, h.wait_bins, h.wait_counts
  FROM started s
  FULL JOIN ended e ON e.at = s.at
  LEFT JOIN histogram h ON h.at = s.at;

-- name: rolled_buckets
-- The roll-ups (run_minutes) from $1 to $2 per bucket of $3 seconds (aligned on $1): sums,
-- and the wait histograms merged; of task $4 and queue $5 ('' for every task or queue): one
-- range of the primary key.
WITH minutes AS MATERIALIZED (
    SELECT date_bin(make_interval(secs => $3), at, $1) AS at, started, completed, failed, waits
      FROM taskd.run_minutes
     WHERE task_id = $4 AND queue = $5 AND at >= $1 AND at < $2
), sums AS (
    SELECT at, sum(started)::int AS started, sum(completed)::int AS completed,
           sum(failed)::int AS failed
      FROM minutes GROUP BY at
), histogram AS (
    SELECT at, array_agg(i ORDER BY i) AS wait_bins, array_agg(n ORDER BY i) AS wait_counts
      FROM (SELECT m.at, w.key::int AS i, sum(w.value::int)::int AS n
              FROM minutes m CROSS JOIN LATERAL jsonb_each_text(m.waits) AS w
             GROUP BY 1, 2) AS bins
     GROUP BY at
)
SELECT s.at, s.started, s.completed, s.failed, NULL::float8 AS wait_p50,
       NULL::float8 AS wait_p95, h.wait_bins, h.wait_counts
  FROM sums s LEFT JOIN histogram h ON h.at = s.at;

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
SELECT date_bin(make_interval(secs => $3), s.at, $1) AS at, s.queue,
       max(s.due) AS due, max(s.delayed) AS delayed, max(s.executing) AS executing,
       max(s.oldest_due_age) AS oldest_due_age,
       (SELECT count(*) FROM peaks) AS queues
  FROM taskd.queue_samples s
  JOIN chosen c ON c.queue = s.queue
 WHERE s.at >= $1 AND s.at < $2
 GROUP BY 1, 2
 ORDER BY 1, 2;
