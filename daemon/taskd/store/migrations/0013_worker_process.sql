-- Issue 12 (item 10): resume after a crash in under a second. Each worker records which process
-- it is (daemon/taskd/worker/process_identity.py): boot id, pid namespace, pid, start time. A daemon
-- starting on the same machine whose start-up reconciliation finds a worker's lock free can then
-- prove that the worker's process has exited and hand back its runs at once, instead of looking
-- at the lock a second time 1.5 s later. NULL: not recorded (another system, an older taskd).
ALTER TABLE taskd.workers ADD COLUMN process jsonb;
