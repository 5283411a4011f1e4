-- Tasks shared by several processes on one store: who runs a task and until when (leases), one
-- global event log (its row id is the sequence every subscriber resumes from), the registered
-- workers, and revoke requests for tasks another process runs.

-- The task's latest event sequence moved to `task_events`; `queue_order` breaks FIFO ties among
-- tasks queued in the same millisecond (microseconds, strictly increasing per process).
ALTER TABLE tasks DROP COLUMN seq;
ALTER TABLE tasks ADD COLUMN queue_order BIGINT NOT NULL DEFAULT 0;
-- The worker that holds the task (reserved while PENDING, running after), and until when its
-- lease runs. NULL owner on a PENDING task: free for any worker to claim.
ALTER TABLE tasks ADD COLUMN owner TEXT;
ALTER TABLE tasks ADD COLUMN lease_until BIGINT;
CREATE INDEX tasks_by_owner ON tasks (owner) WHERE owner IS NOT NULL;
CREATE INDEX tasks_claimable ON tasks (queue, queued_at, queue_order)
    WHERE state = 'PENDING' AND owner IS NULL;

-- Every change of every task, in commit order. AUTOINCREMENT: sequence numbers are never
-- reused, so `Last-Event-ID` stays meaningful after old events are purged.
CREATE TABLE task_events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT    NOT NULL,
    -- The worker (process) that wrote the change.
    origin  TEXT    NOT NULL,
    at      BIGINT  NOT NULL,
    -- The task's record after the change, as JSON.
    record  TEXT    NOT NULL
);
CREATE INDEX task_events_by_task ON task_events (task_id, seq);
CREATE INDEX task_events_by_time ON task_events (at);

-- Processes that run tasks, with their heartbeat.
CREATE TABLE workers (
    id           TEXT    PRIMARY KEY,
    name         TEXT    NOT NULL,
    host         TEXT    NOT NULL,
    pid          BIGINT  NOT NULL,
    mode         TEXT    NOT NULL,
    concurrency  BIGINT  NOT NULL,
    queues       TEXT    NOT NULL,
    started_at   BIGINT  NOT NULL,
    heartbeat_at BIGINT  NOT NULL,
    lease_until  BIGINT  NOT NULL,
    stopped_at   BIGINT,
    processed    BIGINT  NOT NULL DEFAULT 0
);

-- `revoke(terminate)` of a task that another process runs: its owner sees the request and
-- cancels the handler.
CREATE TABLE task_revokes (
    task_id      TEXT   PRIMARY KEY,
    requested_at BIGINT NOT NULL
);
