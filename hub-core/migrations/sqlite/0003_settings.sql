-- Hub-wide settings shared by every host on this database (e.g. the secret that per-project
-- generated passwords derive from, so every host derives the same ones).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
