-- A child run canceled by plain SQL (taskd.cancel) resumes its waiting parent, as a cancel
-- through the client does: a parent in trigger_and_wait must not sleep until its own recheck
-- because its last unfinished child was canceled by a producer in another language.
-- taskd.cancel is the only SQL function that finishes a run (trigger, send_event and
-- complete_token create or queue runs; claim_runs starts them; an executing run's end is
-- written by the daemon's completer, which wakes the parent itself).
--
-- The cancel itself is unchanged: it keeps its body under a name of its own, and taskd.cancel
-- becomes that cancel followed by the wake-up. Its recursion into the children calls
-- taskd.cancel by name, so each canceled child asks to wake its own parent, which is the run
-- being canceled and no longer waiting: only the run the caller named can wake anything.
ALTER FUNCTION taskd.cancel(uuid) RENAME TO cancel_without_wake;
COMMENT ON FUNCTION taskd.cancel_without_wake(uuid) IS
    'The state change of taskd.cancel, without waking the parent: call taskd.cancel.';

-- taskd.cancel(run_id) -> as taskd.cancel_without_wake (the status after the call; TD404,
-- TD409), and when the run is canceled at once its parent, if waiting and left with no
-- unfinished child, goes back to the queue and the daemons are notified at commit.
-- What waking means is wake_parents' (waits.sql): the parent's row is locked only if it
-- is to be woken, and skipped if another transaction holds it (the one that holds it wakes
-- it, or the parent's own recheck does). One difference: this runs inside the caller's
-- transaction, so a sibling finished by a transaction that has not committed yet counts as
-- unfinished; whichever of the two commits last is then not seen by the other, and the
-- parent's recheck (at most CHILDREN_RECHECK, 60 s) resumes it.
CREATE FUNCTION taskd.cancel(run_id uuid) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    result text := taskd.cancel_without_wake(run_id);
    q      text;
BEGIN
    IF result = 'canceled' THEN
        UPDATE taskd.runs p SET status = 'queued', run_at = now()
         WHERE p.id = (SELECT w.id FROM taskd.runs w
                        WHERE w.id = (SELECT c.parent_id FROM taskd.runs c WHERE c.id = run_id)
                          AND w.status = 'waiting'
                          -- the unfinished children only (runs_unfinished_children_idx)
                          AND NOT EXISTS (SELECT 1 FROM taskd.runs s
                                           WHERE s.parent_id = w.id
                                             AND s.status NOT IN ('completed', 'failed',
                                                                  'canceled', 'expired')
                                          OFFSET 0)
                          FOR NO KEY UPDATE SKIP LOCKED)
           AND p.status = 'waiting'
        RETURNING p.queue INTO q;
        IF q IS NOT NULL THEN
            PERFORM pg_notify('taskd_wakeup', q);
        END IF;
    END IF;
    RETURN result;
END
$$;
