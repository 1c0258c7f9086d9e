-- Message Batches submitted by ctx.llm.batch (0009_llm_batches.sql): the submission recorded
-- as the run's step, the fleet's polls (at most one per interval for each batch), the end with
-- its results, and the run woken to read them.
-- Loaded by store/llm_batches.py (store/queries.py: blocks headed `-- name: NAME`).

-- name: record
-- A submitted batch and the step that records it, in one statement, under the run's
-- compare-and-set ($1 run, $2 worker, $3 attempt, $4 step name): a re-execution finds the
-- step and never submits again. Returns the batch's row id, or nothing when the run is no
-- longer this attempt's (or the step was already written).
WITH owner AS (
    -- FOR SHARE: waits for a concurrent change of the run and checks it again (steps.record)
    SELECT 1 FROM taskd.runs r
     WHERE r.id = $1 AND r.status = 'executing' AND r.worker_id = $2 AND r.attempt = $3
       FOR SHARE
), step AS (
    INSERT INTO taskd.steps (run_id, name, status, result, attempts, run_attempt, started_at,
                             finished_at)
    SELECT $1, $4, 'completed', $5::text::jsonb, 1, $3, now(), now() FROM owner
    ON CONFLICT (run_id, name) DO NOTHING
    RETURNING 1
)
INSERT INTO taskd.llm_batches (batch_id, run_id, step, in_step, task_id, attempt, queue,
                               concurrency_key, tags, custom_ids, models, request_count,
                               next_poll_at, admission_id, reserved_usd)
SELECT $6, $1, $4, $7, $8, $3, $9, $10, $11, $12, $13, cardinality($12::text[]),
       now() + make_interval(secs => $14), $15, $16
 WHERE EXISTS (SELECT 1 FROM step)
RETURNING id;

-- name: exists
SELECT EXISTS (SELECT 1 FROM taskd.llm_batches WHERE batch_id = $1 AND run_id = $2);

-- name: read
-- What the run reads when it executes again: the batch's status and, once ended, its results
-- (marked read: the poller stops waking the run for them).
UPDATE taskd.llm_batches
   SET read_at = coalesce(read_at, CASE WHEN status = 'ended' THEN now() END)
 WHERE batch_id = $1 AND run_id = $2
RETURNING status, results, custom_ids, in_step;

-- name: describe
-- The batch's requests and step (ctx.llm.batch adopting a batch an older taskd named by
-- execution), its results neither read nor marked read.
SELECT status, NULL::jsonb AS results, custom_ids, in_step
  FROM taskd.llm_batches WHERE batch_id = $1 AND run_id = $2;

-- name: claim_due
-- Open batches due for a poll ($2 at most), each claimed for the whole fleet: its next poll
-- moves $1 seconds ahead, so no other daemon asks the API about it before then. A range of
-- llm_batches_open_idx: the batches not due are not visited (a batch whose run finished is
-- made due by mark_runs_finished).
WITH due AS (
    SELECT b.id FROM taskd.llm_batches b
     WHERE b.status <> 'ended' AND b.next_poll_at <= now()
     ORDER BY b.next_poll_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED
)
UPDATE taskd.llm_batches b
   SET next_poll_at = now() + make_interval(secs => $1), polls = b.polls + 1,
       last_polled_at = now()
  FROM due
 WHERE b.id = due.id
RETURNING b.id, b.batch_id, b.run_id, b.step, b.in_step, b.task_id, b.attempt, b.queue,
          b.concurrency_key, b.tags, b.custom_ids, b.models, b.submitted_at,
          b.cancel_requested_at, b.finish_failures, b.last_error,
          (SELECT r.status FROM taskd.runs r WHERE r.id = b.run_id) AS run_status;

-- name: mark_runs_finished
-- Open batches whose run finished (canceled, failed, expired) while they are open, not yet
-- asked to cancel: due now, to be canceled by the next claim ($1 at most). It walks the open
-- batches, so the poller runs it every few ticks, not every tick. How many were marked.
WITH marked AS (
    UPDATE taskd.llm_batches b SET next_poll_at = now()
     WHERE b.id IN (
        SELECT b2.id FROM taskd.llm_batches b2
         WHERE b2.status <> 'ended' AND b2.cancel_requested_at IS NULL
           AND b2.next_poll_at > now()
           AND NOT EXISTS (SELECT 1 FROM taskd.runs r
                            WHERE r.id = b2.run_id
                              AND r.status NOT IN ('completed', 'failed', 'canceled',
                                                   'expired'))
         LIMIT $1
           FOR UPDATE SKIP LOCKED)
    RETURNING 1
)
SELECT count(*) FROM marked;

-- name: finish_failed
-- A try at storing the ended batch failed ($2: why): counted; at MAX_FINISH_FAILURES the
-- poller writes it ended without its results instead of downloading them again.
UPDATE taskd.llm_batches
   SET finish_failures = finish_failures + 1, last_error = $2
 WHERE id = $1 AND status <> 'ended';

-- name: polled
-- What a poll found of a batch still open: its status ($2; NULL: unknown, the poll failed),
-- the poll's error ($3, or NULL).
UPDATE taskd.llm_batches
   SET status = coalesce($2, status), last_error = $3
 WHERE id = $1 AND status <> 'ended';

-- name: cancel_requested
UPDATE taskd.llm_batches SET cancel_requested_at = now() WHERE id = $1;

-- name: lock_open
-- The end's compare-and-set: the batch is still open (another daemon has not ended it).
SELECT id FROM taskd.llm_batches WHERE id = $1 AND status <> 'ended' FOR UPDATE;

-- name: true_up
-- The batch ended (same transaction as finish): its admission, if it has one, becomes what it
-- used and was billed ($2 input, $3 output tokens, $4 dollars at batch prices).
UPDATE taskd.llm_admissions a
   SET input = $2, output = $3, cost = $4, settled = true
  FROM taskd.llm_batches b
 WHERE b.id = $1 AND a.id = b.admission_id;

-- name: finish
-- The batch ended: its results ($2, in request order) stored, and its run, if it waits, back
-- to the queue now (its claimers nudged). Returns the run and whether it was woken.
WITH ended AS (
    -- a batch whose run has finished is never read: marked read, out of wake_missed's index
    UPDATE taskd.llm_batches b
       SET status = 'ended', results = $2::text::jsonb, ended_at = now(), last_error = NULL,
           read_at = CASE WHEN NOT EXISTS (
                              SELECT 1 FROM taskd.runs r
                               WHERE r.id = b.run_id
                                 AND r.status NOT IN ('completed', 'failed', 'canceled',
                                                      'expired'))
                          THEN now() END
     WHERE b.id = $1
    RETURNING b.run_id
), woken AS (
    UPDATE taskd.runs r SET status = 'queued', run_at = now()
      FROM ended WHERE r.id = ended.run_id AND r.status = 'waiting'
    RETURNING r.id, r.task_id, r.queue
), notified AS (
    SELECT pg_notify('taskd_wakeup', q.queue) FROM (SELECT DISTINCT queue FROM woken) AS q
)
SELECT woken.id, woken.task_id FROM woken CROSS JOIN (SELECT count(*) FROM notified) AS n;

-- name: wake_missed
-- Runs whose batch ended while they were still executing, and that suspended after without
-- reading it (the end's own wake-up found the run executing): back to the queue now, not at
-- their recheck. At most 3 times per batch: a run whose code no longer reads it is not woken
-- forever.
WITH due AS (
    SELECT b.id AS batch_row, r.id FROM taskd.llm_batches b JOIN taskd.runs r ON r.id = b.run_id
     WHERE b.status = 'ended' AND b.read_at IS NULL AND b.missed_wakes < 3
       AND r.status = 'waiting'
     LIMIT $1
       FOR NO KEY UPDATE SKIP LOCKED
), counted AS (
    UPDATE taskd.llm_batches b SET missed_wakes = b.missed_wakes + 1
      FROM due WHERE b.id = due.batch_row
), woken AS (
    UPDATE taskd.runs r SET status = 'queued', run_at = now()
      FROM due WHERE r.id = due.id AND r.status = 'waiting'
    RETURNING r.id, r.task_id, r.queue
), notified AS (
    SELECT pg_notify('taskd_wakeup', q.queue) FROM (SELECT DISTINCT queue FROM woken) AS q
)
SELECT DISTINCT woken.id, woken.task_id
  FROM woken CROSS JOIN (SELECT count(*) FROM notified) AS n;

-- name: list_of_run
-- A run's batches, oldest first (what tests and operators look at).
SELECT id, batch_id, step, in_step, status, request_count, polls, submitted_at, next_poll_at,
       ended_at, cancel_requested_at, last_error, finish_failures, admission_id, reserved_usd
  FROM taskd.llm_batches WHERE run_id = $1 ORDER BY id;
