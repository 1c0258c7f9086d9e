-- Descriptions of what users may call and read: the public SQL functions, and the tables teams
-- write monitoring SQL on (runs, attempts, steps, run_logs, events, schedules, workers). psql's
-- \df+ and \d+ show them, and docs/reference/sql.md is generated from them (docs/build_reference.py).
-- Only comments: no table, row or function body changes.

-- Functions ---------------------------------------------------------------------------------------

COMMENT ON FUNCTION taskd.trigger(text, jsonb, jsonb) IS
    'Create a run of task_id with payload, in the caller''s transaction; returns the run id. The daemons are notified when the transaction commits. options (all optional): delay (seconds or an interval: ''10s'', ''5 minutes''), run_at (timestamptz), priority (int, higher starts first), max_attempts (int), retry (object: some of max_attempts, min_delay, max_delay, factor, jitter, each overriding the task''s), max_duration (seconds or an interval), tags (array of text), queue (text), ttl (a run not started within it ends expired), idempotency_key (text) with idempotency_ttl (default 24 hours: a second trigger with the key returns the first run''s id and creates nothing), concurrency_key (text: runs of one key share the queue''s per-key limit). SQLSTATE 22023: a bad option; 54000: payload over max_payload_bytes.';

COMMENT ON FUNCTION taskd.send_event(text, jsonb) IS
    'Record an event named event_name and create one run of every task subscribed to it (@task(on_event=...)), with event_payload as payload, in the caller''s transaction; returns the event''s id (each run carries it as event_id). An event no task subscribes to is recorded all the same.';

COMMENT ON FUNCTION taskd.cancel(uuid) IS
    'Cancel a run; returns its status after the call: ''canceled'' for a run that had not started (queued, delayed, waiting), ''executing'' for a running one, whose daemon is notified and cancels it (it then ends canceled, after its on_cancel hook). Its unfinished child runs are canceled too. SQLSTATE TD404: no such run; TD409: the run has already finished.';

COMMENT ON FUNCTION taskd.complete_token(uuid, jsonb) IS
    'Complete a wait token with token_data: the run waiting on it (wait.for_token) resumes and gets the data. Returns ''completed''. SQLSTATE TD404: no such token; TD409: already completed, or timed out; 54000: data over max_payload_bytes.';

COMMENT ON FUNCTION taskd.create_schedule(text, text, jsonb) IS
    'Create a cron schedule of task_id; returns its id (''sched_'' and 32 hex digits). cron: 5 fields, 6 with seconds first, or a shorthand such as @daily. options (all optional): timezone (IANA name, default UTC), payload (any JSON: every run gets it as ScheduledRun.payload), external_id (text), dedup_key (text: creating again with the same key updates that schedule and returns its id), catch_up (latest, all or none; default latest). The daemons pick it up when the transaction commits. SQLSTATE 22023: a bad argument; 54000: payload over max_payload_bytes.';

COMMENT ON FUNCTION taskd.update_schedule(text, jsonb) IS
    'Change a schedule; returns its id. changes: cron, timezone, catch_up (each replaces the value), payload (null clears it), external_id (null clears it), active (false pauses, true resumes). A key left out keeps its value. SQLSTATE TD404: no such schedule; 22023: a bad value.';

COMMENT ON FUNCTION taskd.delete_schedule(text) IS
    'Delete a schedule; the runs it fired stay (their schedule_id still names it). SQLSTATE TD404: no such schedule.';

COMMENT ON FUNCTION taskd.trigger_schedule(text) IS
    'Fire a schedule now, paused or not; returns the new run''s id. The run gets the payload a scheduled fire gives (ScheduledRun: timestamp = now, in the schedule''s timezone), with manual = true and no scheduled_for; the next scheduled fire is unchanged. SQLSTATE TD404: no such schedule.';

-- taskd.runs -----------------------------------------------------------------------------------

COMMENT ON TABLE taskd.runs IS
    'One row per run: its state, payload, output or error, and where it stands. Finished runs are deleted after [retention] runs.';
COMMENT ON COLUMN taskd.runs.id IS 'The run id: a UUIDv7, so ids sort by creation.';
COMMENT ON COLUMN taskd.runs.task_id IS 'The task it runs (@task(id=...)).';
COMMENT ON COLUMN taskd.runs.queue IS 'The queue it waits in (the task''s, unless the trigger gave one).';
COMMENT ON COLUMN taskd.runs.status IS 'queued (includes delayed runs and retries), executing, waiting, then completed, failed, canceled or expired (terminal).';
COMMENT ON COLUMN taskd.runs.payload IS 'The JSON payload it was triggered with.';
COMMENT ON COLUMN taskd.runs.output IS 'What the task returned, as JSON (completed runs).';
COMMENT ON COLUMN taskd.runs.error IS 'The last attempt''s error (the final one once failed): {"type": exception class name, "message": text, "traceback": text or null}; for failures outside the task''s code, type is Canceled, Expired, WorkerLost, UnknownTask, OutcomeNotStored or ExecutorError.';
COMMENT ON COLUMN taskd.runs.priority IS 'Higher starts first (within its queue and concurrency key).';
COMMENT ON COLUMN taskd.runs.run_at IS 'When it may start (queued), or when it next looks (waiting).';
COMMENT ON COLUMN taskd.runs.attempt IS 'Attempts started so far (1-based once started).';
COMMENT ON COLUMN taskd.runs.max_attempts IS 'The trigger''s attempt limit; NULL: the task''s retry policy.';
COMMENT ON COLUMN taskd.runs.tags IS 'The trigger''s tags.';
COMMENT ON COLUMN taskd.runs.created_at IS 'When it was triggered.';
COMMENT ON COLUMN taskd.runs.started_at IS 'When its first attempt started.';
COMMENT ON COLUMN taskd.runs.attempt_started_at IS 'When its current (or last) attempt started.';
COMMENT ON COLUMN taskd.runs.finished_at IS 'When it reached a terminal state.';
COMMENT ON COLUMN taskd.runs.worker_id IS 'The worker (taskd.workers.id) holding it while executing.';
COMMENT ON COLUMN taskd.runs.lease_expires_at IS 'Set exactly while executing: past it, another daemon hands the run back.';
COMMENT ON COLUMN taskd.runs.expires_at IS 'The ttl''s deadline: a run not started by then ends expired.';
COMMENT ON COLUMN taskd.runs.cancel_requested_at IS 'When a cancel was asked for (taskd.cancel on an executing run).';
COMMENT ON COLUMN taskd.runs.replayed_from IS 'The run this one replays.';
COMMENT ON COLUMN taskd.runs.event_id IS 'The event that created it (taskd.events.id).';
COMMENT ON COLUMN taskd.runs.schedule_id IS 'The schedule that fired it (taskd.schedules.id).';
COMMENT ON COLUMN taskd.runs.scheduled_for IS 'The fire time it is for (NULL for a schedule fired on demand).';
COMMENT ON COLUMN taskd.runs.metadata IS 'What the task set with ctx.set_metadata (a JSON object), kept after it ends.';
COMMENT ON COLUMN taskd.runs.parent_id IS 'The run that created this one (child runs, trigger_and_wait).';
COMMENT ON COLUMN taskd.runs.idempotency_key IS 'The key it was triggered with, if any.';
COMMENT ON COLUMN taskd.runs.concurrency_key IS 'Its concurrency key ('''' = none): runs of one key in one queue share the per-key limit.';
COMMENT ON COLUMN taskd.runs.retry IS 'The trigger''s own backoff (some of min_delay, max_delay, factor, jitter); NULL: the task''s.';
COMMENT ON COLUMN taskd.runs.max_duration IS 'Seconds an attempt may run, given at trigger; NULL: the task''s max_duration.';

-- taskd.attempts -------------------------------------------------------------------------------

COMMENT ON TABLE taskd.attempts IS
    'One row per finished attempt of a run (written when the attempt ends; deleted with its run).';
COMMENT ON COLUMN taskd.attempts.run_id IS 'The run (taskd.runs.id).';
COMMENT ON COLUMN taskd.attempts.attempt IS 'The attempt''s number, from 1.';
COMMENT ON COLUMN taskd.attempts.worker_id IS 'The worker that ran it (taskd.workers.id).';
COMMENT ON COLUMN taskd.attempts.started_at IS 'When the attempt started.';
COMMENT ON COLUMN taskd.attempts.finished_at IS 'When it ended (for a lost attempt: when it was found lost).';
COMMENT ON COLUMN taskd.attempts.outcome IS 'completed, failed, timed_out (max_duration exceeded), canceled, or lost (its worker died).';
COMMENT ON COLUMN taskd.attempts.error IS 'The attempt''s error, shaped as taskd.runs.error; NULL when completed.';

-- taskd.steps ----------------------------------------------------------------------------------

COMMENT ON TABLE taskd.steps IS
    'Durable steps (ctx.step): a step''s result, recorded once per run and returned without calling the step when the run executes again.';
COMMENT ON COLUMN taskd.steps.run_id IS 'The run (taskd.runs.id).';
COMMENT ON COLUMN taskd.steps.name IS 'The step''s name, unique within its run (waits are wait:1, wait:2...; tokens token:N; child runs children:N).';
COMMENT ON COLUMN taskd.steps.status IS 'completed, or failed (its tries exhausted: called again by the next attempt, unless its error type is StepResultNotStored).';
COMMENT ON COLUMN taskd.steps.result IS 'What the step''s function returned, as JSON.';
COMMENT ON COLUMN taskd.steps.error IS 'The last try''s error: {"type": ..., "message": ...}.';
COMMENT ON COLUMN taskd.steps.attempts IS 'Calls of the step''s function so far (its own retries, over the run''s attempts).';
COMMENT ON COLUMN taskd.steps.run_attempt IS 'The run''s attempt that recorded it.';
COMMENT ON COLUMN taskd.steps.started_at IS 'When its first call started.';
COMMENT ON COLUMN taskd.steps.finished_at IS 'When it was recorded.';

-- taskd.run_logs -------------------------------------------------------------------------------

COMMENT ON TABLE taskd.run_logs IS
    'Lines a task logged through ctx.log (at most [log] run_lines per run, at least [log] run_level), deleted with their run.';
COMMENT ON COLUMN taskd.run_logs.id IS 'Increasing: orders the lines (taskd logs -f reads past the last one seen).';
COMMENT ON COLUMN taskd.run_logs.run_id IS 'The run (taskd.runs.id).';
COMMENT ON COLUMN taskd.run_logs.task_id IS 'The run''s task.';
COMMENT ON COLUMN taskd.run_logs.attempt IS 'The attempt that logged it.';
COMMENT ON COLUMN taskd.run_logs.at IS 'When it was logged.';
COMMENT ON COLUMN taskd.run_logs.level IS 'debug, info, warning or error.';
COMMENT ON COLUMN taskd.run_logs.message IS 'The message.';
COMMENT ON COLUMN taskd.run_logs.fields IS 'The keyword fields given with it, as a JSON object.';

-- taskd.events ---------------------------------------------------------------------------------

COMMENT ON TABLE taskd.events IS
    'Events recorded by send_event (Python, SQL), deleted after [retention] events.';
COMMENT ON COLUMN taskd.events.id IS 'The event id (runs it created carry it as event_id).';
COMMENT ON COLUMN taskd.events.name IS 'The event''s name (what @task(on_event=...) subscribes to).';
COMMENT ON COLUMN taskd.events.payload IS 'Its JSON payload (each run it created got it).';
COMMENT ON COLUMN taskd.events.runs IS 'How many runs it created.';
COMMENT ON COLUMN taskd.events.created_at IS 'When it was sent.';

-- taskd.schedules ------------------------------------------------------------------------------

COMMENT ON TABLE taskd.schedules IS
    'Cron schedules: declared in code (@schedules.task) or created at run time (client, SQL, API, CLI).';
COMMENT ON COLUMN taskd.schedules.id IS 'The schedule id: the task id for a declared schedule, sched_<32 hex digits> for a created one.';
COMMENT ON COLUMN taskd.schedules.task_id IS 'The task it fires.';
COMMENT ON COLUMN taskd.schedules.cron IS 'The cron expression: 5 fields, 6 with seconds first, or a shorthand such as @daily.';
COMMENT ON COLUMN taskd.schedules.timezone IS 'The IANA timezone the cron is read in.';
COMMENT ON COLUMN taskd.schedules.payload IS 'Extra data every run it fires gets (ScheduledRun.payload).';
COMMENT ON COLUMN taskd.schedules.external_id IS 'The creator''s own reference (a user id...), in every run''s payload.';
COMMENT ON COLUMN taskd.schedules.dedup_key IS 'Creating again with this key updates the schedule instead of adding one.';
COMMENT ON COLUMN taskd.schedules.catch_up IS 'Fire times missed by more than 60 s: latest (one run), all (one per time, the latest 100), none.';
COMMENT ON COLUMN taskd.schedules.declared IS 'Declared in code (synced at each daemon start; deactivated when removed from the code).';
COMMENT ON COLUMN taskd.schedules.active IS 'false: paused, it fires nothing.';
COMMENT ON COLUMN taskd.schedules.last_fired_at IS 'The latest fire time that got its run.';
COMMENT ON COLUMN taskd.schedules.created_at IS 'When it was created.';
COMMENT ON COLUMN taskd.schedules.updated_at IS 'When it was last changed.';

-- taskd.workers --------------------------------------------------------------------------------

COMMENT ON TABLE taskd.workers IS
    'One row per daemon process started; rows of stopped workers are deleted after [retention] workers.';
COMMENT ON COLUMN taskd.workers.id IS 'Random per process start.';
COMMENT ON COLUMN taskd.workers.host IS 'The host name of its machine.';
COMMENT ON COLUMN taskd.workers.pid IS 'Its process id.';
COMMENT ON COLUMN taskd.workers.version IS 'Its taskd version.';
COMMENT ON COLUMN taskd.workers.concurrency IS 'Most runs it executes at once ([worker] concurrency).';
COMMENT ON COLUMN taskd.workers.queues IS 'The queues it claims from (empty: every queue).';
COMMENT ON COLUMN taskd.workers.tasks IS 'The task ids it serves.';
COMMENT ON COLUMN taskd.workers.started_at IS 'When it started.';
COMMENT ON COLUMN taskd.workers.heartbeat_at IS 'Its latest heartbeat.';
COMMENT ON COLUMN taskd.workers.stopped_at IS 'Set on a clean stop, or when it was found gone; NULL while it lives.';
COMMENT ON COLUMN taskd.workers.lock_key IS 'The advisory lock it holds for its whole life: free means the worker is gone.';
COMMENT ON COLUMN taskd.workers.last_report IS 'What its start-up reconciliation or its last rescue found (Health.workers[].last_report).';
COMMENT ON COLUMN taskd.workers.process IS 'Which process it is (boot id, pid namespace, pid, start time), to prove it exited; NULL: not recorded.';
