-- Whether the hub may have created a container for the project (see SQLite's 0009).
ALTER TABLE projects ADD COLUMN containers_created BOOLEAN NOT NULL DEFAULT TRUE;
