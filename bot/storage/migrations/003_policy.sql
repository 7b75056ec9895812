-- Version 3: the policy in force lives in the database, so every Caveat process (bot shards, dashboards) uses the
-- same one. policy_versions keeps each published policy's files (YAML text, keyed by their relative paths; the
-- version is the hash of exactly these files); the newest policy_events row names the active version.
CREATE TABLE policy_versions (
    version     TEXT PRIMARY KEY,
    files       TEXT NOT NULL,          -- JSON {relative path: file text}
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL
);

CREATE TABLE policy_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    version     TEXT NOT NULL REFERENCES policy_versions (version)
);
