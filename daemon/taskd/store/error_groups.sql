-- Error groups (the console's errors page): failed attempts (outcome failed or timed_out)
-- grouped by their fingerprint, written with the attempt (taskd.error_fingerprint).
-- Loaded by store/error_groups.py (store/queries.py: blocks headed `-- name: NAME`).

-- name: groups
-- The groups of the failures finished in [$1, $2), most recently seen first, at most $3: their
-- failures, first and last in the range, runs, and failures per bucket ($4: a bucket's
-- seconds, from $1). attempts_failed_idx: index-only scans of the range's failures, one for
-- the buckets (a few hundred rows however many failures), one for the distinct runs of the
-- groups listed.
WITH buckets AS MATERIALIZED (
    SELECT a.fingerprint, date_bin(make_interval(secs => $4), a.finished_at, $1) AS at,
           count(*) AS count, min(a.finished_at) AS first_seen, max(a.finished_at) AS last_seen
      FROM taskd.attempts a
     WHERE a.fingerprint IS NOT NULL AND a.finished_at >= $1 AND a.finished_at < $2
     GROUP BY 1, 2
), top AS MATERIALIZED (
    SELECT fingerprint, sum(count)::bigint AS count, min(first_seen) AS first_seen,
           max(last_seen) AS last_seen
      FROM buckets GROUP BY fingerprint ORDER BY max(last_seen) DESC, fingerprint LIMIT $3
), runs AS (
    SELECT d.fingerprint, count(*) AS runs
      FROM (SELECT DISTINCT a.fingerprint, a.run_id FROM taskd.attempts a
             WHERE a.fingerprint IS NOT NULL AND a.finished_at >= $1 AND a.finished_at < $2
               AND a.fingerprint = ANY(ARRAY(SELECT fingerprint FROM top))) AS d
     GROUP BY d.fingerprint
)
SELECT t.fingerprint, t.count, r.runs, t.first_seen, t.last_seen,
       ARRAY(SELECT b.at FROM buckets b WHERE b.fingerprint = t.fingerprint ORDER BY b.at)
           AS ats,
       ARRAY(SELECT b.count FROM buckets b WHERE b.fingerprint = t.fingerprint ORDER BY b.at)
           AS counts
  FROM top t JOIN runs r ON r.fingerprint = t.fingerprint
 ORDER BY t.last_seen DESC, t.fingerprint;

-- name: groups_of_task
-- The same for the failures of one task's runs ($5): the range's failures read once, each
-- checked against its run (by primary key), then grouped.
WITH failures AS MATERIALIZED (
    SELECT a.fingerprint, a.run_id, a.finished_at
      FROM taskd.attempts a JOIN taskd.runs r ON r.id = a.run_id
     WHERE a.fingerprint IS NOT NULL AND a.finished_at >= $1 AND a.finished_at < $2
       AND r.task_id = $5
), buckets AS MATERIALIZED (
    SELECT fingerprint, date_bin(make_interval(secs => $4), finished_at, $1) AS at,
           count(*) AS count, min(finished_at) AS first_seen, max(finished_at) AS last_seen
      FROM failures GROUP BY 1, 2
), top AS MATERIALIZED (
    SELECT fingerprint, sum(count)::bigint AS count, min(first_seen) AS first_seen,
           max(last_seen) AS last_seen
      FROM buckets GROUP BY fingerprint ORDER BY max(last_seen) DESC, fingerprint LIMIT $3
), runs AS (
    SELECT d.fingerprint, count(*) AS runs
      FROM (SELECT DISTINCT f.fingerprint, f.run_id FROM failures f
             WHERE f.fingerprint = ANY(ARRAY(SELECT fingerprint FROM top))) AS d
     GROUP BY d.fingerprint
)
SELECT t.fingerprint, t.count, r.runs, t.first_seen, t.last_seen,
       ARRAY(SELECT b.at FROM buckets b WHERE b.fingerprint = t.fingerprint ORDER BY b.at)
           AS ats,
       ARRAY(SELECT b.count FROM buckets b WHERE b.fingerprint = t.fingerprint ORDER BY b.at)
           AS counts
  FROM top t JOIN runs r ON r.fingerprint = t.fingerprint
 ORDER BY t.last_seen DESC, t.fingerprint;

-- name: work_mem
-- (in the read's transaction) room for the aggregates of a range with many failures
SET LOCAL work_mem = '64MB';

-- name: describe
-- What each group is: its latest failure's type, message shape and top frame of task code,
-- and the tasks of its latest ($2) failing runs (the runs' own task ids).
SELECT g.fingerprint, e.type, e.message, e.frame,
       (SELECT array_agg(DISTINCT r.task_id ORDER BY r.task_id)
          FROM (SELECT DISTINCT a.run_id FROM taskd.attempts a
                 WHERE a.fingerprint = g.fingerprint ORDER BY a.run_id DESC LIMIT $2) AS l
          JOIN taskd.runs r ON r.id = l.run_id) AS tasks
  FROM unnest($1::text[]) AS g (fingerprint)
 CROSS JOIN LATERAL (
    SELECT a.error->>'type' AS type, taskd.error_message_shape(a.error->>'message') AS message,
           taskd.error_frame(a.error->>'traceback') AS frame
      FROM taskd.attempts a WHERE a.fingerprint = g.fingerprint
     ORDER BY a.run_id DESC LIMIT 1) AS e;
