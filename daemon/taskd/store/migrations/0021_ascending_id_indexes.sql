-- The indexes that list a name's rows newest first keep their ids in ascending order (issue 18:
-- the cost of an enqueue).
--
-- runs_task_idx (task_id, id DESC), events_name_idx (name, id DESC) and
-- attempts_fingerprint_idx (fingerprint, run_id DESC) were made descending for "newest
-- first". But ids are UUIDv7, so each new row sorts first in its name's range: every insert
-- lands at the left edge of a leaf page, which PostgreSQL splits in half and never fills
-- again. runs_task_idx was 1.8 times the size of the same index in ascending order (980 leaf
-- pages vs 549 for 90,000 runs) and cost a batch of 1,000 triggers 1.0-1.7 ms of the server's
-- 9-10 ms. Ascending, a new id goes after the last one of its name, where PostgreSQL's split
-- keeps the left page full; newest first is the same index scanned backward (the same plans,
-- the same cost).
--
-- Each index is built under its old name's shadow, then swapped: writes to the table wait for
-- the build (CREATE INDEX), reads only for the swap at the end. Measured on this project's
-- 2-core machine: 1,000,000 runs take about 1 s (README: "Upgrading").
CREATE INDEX runs_task_asc_idx ON taskd.runs (task_id, id);
DROP INDEX taskd.runs_task_idx;
ALTER INDEX taskd.runs_task_asc_idx RENAME TO runs_task_idx;

CREATE INDEX events_name_asc_idx ON taskd.events (name, id);
DROP INDEX taskd.events_name_idx;
ALTER INDEX taskd.events_name_asc_idx RENAME TO events_name_idx;

CREATE INDEX attempts_fingerprint_asc_idx ON taskd.attempts (fingerprint, run_id)
    WHERE fingerprint IS NOT NULL;
DROP INDEX taskd.attempts_fingerprint_idx;
ALTER INDEX taskd.attempts_fingerprint_asc_idx RENAME TO attempts_fingerprint_idx;
