-- Monitoring reads from the store, so what it shows survives restarts and record expiry.

-- A task's timeline is its events, found between its queue and end times: an index by time
-- only ever appends (one by task id, random, halved the writer's throughput).
CREATE INDEX task_events_by_time ON task_events (at);

-- Tasks each worker ran, by outcome (all time).
ALTER TABLE workers ADD COLUMN succeeded BIGINT NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN failed BIGINT NOT NULL DEFAULT 0;

-- One row per finished task, kept a day: a window's runtime and queue-wait percentiles.
CREATE TABLE task_samples (
    finished_at BIGINT NOT NULL,
    kind        TEXT   NOT NULL,
    state       TEXT   NOT NULL,
    -- NULL when the task never started.
    runtime_ms  BIGINT,
    wait_ms     BIGINT
);
CREATE INDEX task_samples_by_time ON task_samples (finished_at);

-- All-time latency histograms (Prometheus): observations per bucket, and their sum.
CREATE TABLE task_latency (
    kind    TEXT    NOT NULL,
    latency TEXT    NOT NULL,
    -- Index of the bucket's upper bound (the last index is +Inf).
    bucket  INTEGER NOT NULL,
    count   BIGINT  NOT NULL,
    sum_ms  BIGINT  NOT NULL,
    PRIMARY KEY (kind, latency, bucket)
);
