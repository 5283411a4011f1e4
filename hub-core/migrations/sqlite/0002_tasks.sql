-- Background tasks: the in-process queue and the history monitoring reads.
-- No foreign key to projects: a task's history outlives its project.
CREATE TABLE tasks (
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
    -- Sequence number of the task's latest event; the highest one seeds the counter on restart.
    seq           BIGINT  NOT NULL,
    -- Held while the task is unfinished (e.g. one operation per project); NULL otherwise.
    exclusive_key TEXT    UNIQUE
);
CREATE INDEX tasks_by_state ON tasks (state, queued_at);
CREATE INDEX tasks_by_project ON tasks (project_id, queued_at);
CREATE INDEX tasks_by_queued ON tasks (queued_at);
CREATE INDEX tasks_by_finished ON tasks (finished_at);

-- Finished-task counters per minute, kind and final state. Kept apart from `tasks` so that
-- purging expired records leaves history and rates intact.
CREATE TABLE task_counts (
    minute     BIGINT NOT NULL,
    kind       TEXT   NOT NULL,
    state      TEXT   NOT NULL,
    count      BIGINT NOT NULL,
    runtime_ms BIGINT NOT NULL,
    PRIMARY KEY (minute, kind, state)
);
