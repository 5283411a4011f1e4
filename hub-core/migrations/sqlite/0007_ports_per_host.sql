-- Ports are unique per Docker host (a project's `host`), not across the whole registry: two
-- projects on different hosts may both hold 8010. The table is rebuilt (SQLite cannot change a
-- primary key), each lease taking its project's host.
CREATE TABLE port_leases_by_host (
    host       TEXT    NOT NULL DEFAULT 'local',
    port       INTEGER NOT NULL,
    project_id BIGINT  NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    role       TEXT    NOT NULL,
    PRIMARY KEY (host, port),
    UNIQUE (project_id, role)
);
INSERT INTO port_leases_by_host (host, port, project_id, role)
SELECT p.host, l.port, l.project_id, l.role FROM port_leases l JOIN projects p ON p.id = l.project_id;
DROP TABLE port_leases;
ALTER TABLE port_leases_by_host RENAME TO port_leases;
