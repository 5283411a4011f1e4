-- The engine a project runs on: `local` (the engine of the workers on the default queue), or
-- the name of a host whose workers take the queue of that name.
ALTER TABLE projects ADD COLUMN host TEXT NOT NULL DEFAULT 'local';
