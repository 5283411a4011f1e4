-- Tasks shared by several processes on one store: who runs a task and until when (leases), one
-- global event log (its row id is the sequence every subscriber resumes from), the registered
-- workers, and revoke requests for tasks another process runs.

-- The tasks table, rebuilt with what sharing needs:
-- - `owner` / `lease_until`: the worker that holds the task (reserved while PENDING, running
--   after) and until when its lease runs; a PENDING task without owner is free to claim;
-- - `queue_order` breaks FIFO ties among tasks queued in the same millisecond (microseconds,
--   strictly increasing per process); the task's latest event sequence moved to `task_events`;
-- - indexes that hold only the rows they serve (unfinished tasks, held tasks, keys in use), so
--   that a finished task leaves them and the common write touches few of them.
CREATE TABLE tasks_shared (
    id            TEXT    PRIMARY KEY,
    kind          TEXT    NOT NULL,
    queue         TEXT    NOT NULL,
    project_id    BIGINT,
    payload       TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    progress      INTEGER NOT NULL,
    status        TEXT,
    result        TEXT,
    error_code    TEXT,
    error_message TEXT,
    attempt       INTEGER NOT NULL,
    worker        TEXT,
    soft_limit_ms BIGINT  NOT NULL,
    hard_limit_ms BIGINT  NOT NULL,
    queued_at     BIGINT  NOT NULL,
    started_at    BIGINT,
    finished_at   BIGINT,
    queue_order   BIGINT  NOT NULL DEFAULT 0,
    -- Held while the task is unfinished (e.g. one operation per project); NULL otherwise.
    exclusive_key TEXT,
    owner         TEXT,
    lease_until   BIGINT
);
INSERT INTO tasks_shared (id, kind, queue, project_id, payload, state, progress, status, result,
    error_code, error_message, attempt, worker, soft_limit_ms, hard_limit_ms, queued_at,
    started_at, finished_at, queue_order, exclusive_key, owner, lease_until)
SELECT id, kind, queue, project_id, payload, state, progress, status, result, error_code,
    error_message, attempt, worker, soft_limit_ms, hard_limit_ms, queued_at, started_at,
    finished_at, seq, exclusive_key, NULL, NULL
FROM tasks;
DROP TABLE tasks;
ALTER TABLE tasks_shared RENAME TO tasks;

CREATE UNIQUE INDEX tasks_by_key ON tasks (exclusive_key) WHERE exclusive_key IS NOT NULL;
CREATE INDEX tasks_unfinished ON tasks (state, queue)
    WHERE state NOT IN ('SUCCESS', 'FAILURE', 'REVOKED');
CREATE INDEX tasks_held ON tasks (owner)
    WHERE owner IS NOT NULL AND state NOT IN ('SUCCESS', 'FAILURE', 'REVOKED');
CREATE INDEX tasks_claimable ON tasks (queue, queued_at, queue_order)
    WHERE state = 'PENDING' AND owner IS NULL;
CREATE INDEX tasks_by_project ON tasks (project_id, queued_at) WHERE project_id IS NOT NULL;
CREATE INDEX tasks_by_queued ON tasks (queued_at);
CREATE INDEX tasks_by_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;

-- Every change of every task, in commit order: the task's changing columns after the change.
-- AUTOINCREMENT: sequence numbers are never reused, so `Last-Event-ID` stays meaningful after
-- old events are purged. Written in the same transaction as the change, and only for changes
-- the store took (fencing).
CREATE TABLE task_events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id       TEXT    NOT NULL,
    -- The process (worker id) that wrote the change.
    origin        TEXT    NOT NULL,
    at            BIGINT  NOT NULL,
    state         TEXT    NOT NULL,
    progress      INTEGER NOT NULL,
    status        TEXT,
    result        TEXT,
    error_code    TEXT,
    error_message TEXT,
    attempt       INTEGER NOT NULL,
    worker        TEXT,
    started_at    BIGINT,
    finished_at   BIGINT
);
-- Read by sequence only (subscribers); no index by task yet, as every index here costs each
-- of the three events a job writes.

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

-- A revoke of a task another live process holds: its owner sees the request, revokes the task
-- if it has not started (it never will), and cancels its run when `terminate` is set.
CREATE TABLE task_revokes (
    task_id      TEXT    PRIMARY KEY,
    requested_at BIGINT  NOT NULL,
    terminate    INTEGER NOT NULL
);
