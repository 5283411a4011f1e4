-- Whether the hub may have created a container for the project: set, and committed, before the
-- first one is created; never cleared. An operation on a project it never created one for
-- does not ask the engine for the project's containers (there can be none: their label holds
-- the project's id, which is never reused). Projects registered before are assumed to have some.
ALTER TABLE projects ADD COLUMN containers_created BOOLEAN NOT NULL DEFAULT TRUE;
