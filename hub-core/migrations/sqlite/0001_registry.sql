-- Projects and the host ports they hold.
-- Timestamps are Unix milliseconds (BIGINT) so the same schema reads the same on PostgreSQL.
CREATE TABLE projects (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE,
    slug          TEXT    NOT NULL UNIQUE,
    path          TEXT    NOT NULL UNIQUE,
    -- The allocator's slot k (ports = base + stride * k); NULL when the ports fit no slot.
    port_slot     BIGINT  UNIQUE,
    backend_port  INTEGER NOT NULL,
    frontend_port INTEGER NOT NULL,
    postgres_port INTEGER NOT NULL,
    redis_port    INTEGER NOT NULL,
    status        TEXT    NOT NULL DEFAULT 'stopped',
    health        TEXT    NOT NULL DEFAULT 'unknown',
    last_error    TEXT,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL,
    last_started  BIGINT,
    last_stopped  BIGINT
);

-- One row per held port, whatever its role: the primary key is the last line of defence
-- against two projects (or two roles) sharing a host port, even when role ranges overlap.
CREATE TABLE port_leases (
    port       INTEGER PRIMARY KEY,
    project_id BIGINT  NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    role       TEXT    NOT NULL,
    UNIQUE (project_id, role)
);
