-- Issue 12 (review, "large fan-out"): parents_wake asks, after every completion batch, whether
-- a waiting parent still has an unfinished child. Through runs_parent_idx that walked all the
-- parent's children past the finished ones (or the planner chose a scan of the whole table):
-- O(n) per batch, O(n^2 / batch) over a fan-out of n children. This index holds only the
-- children not yet finished, so the question costs the few that are left. Its predicate is
-- parents_wake's filter word for word, so the planner can prove it.
-- Write cost: status is already in the predicate of runs_claim_idx, so a change of status is
-- never a HOT update and inserts into the table's indexes anyway; this one takes an entry only
-- for a child run entering an unfinished state (claim, retry, suspension), none for a run
-- without a parent and none when a run finishes.
CREATE INDEX runs_unfinished_children_idx ON taskd.runs (parent_id)
    WHERE parent_id IS NOT NULL AND status NOT IN ('completed', 'failed', 'canceled', 'expired');
