-- The unfinished-task indexes state their condition the way the queries do, as three
-- comparisons (SQLite's schema changed so for speed, see its 0008; the queries are shared).
DROP INDEX tasks_unfinished;
CREATE INDEX tasks_unfinished ON tasks (state, queue)
    WHERE state <> 'SUCCESS' AND state <> 'FAILURE' AND state <> 'REVOKED';
DROP INDEX tasks_held;
CREATE INDEX tasks_held ON tasks (owner)
    WHERE owner IS NOT NULL AND state <> 'SUCCESS' AND state <> 'FAILURE' AND state <> 'REVOKED';
