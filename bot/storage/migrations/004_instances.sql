-- Version 4: which Caveat process acts on each post, and which processes are alive, so that another process
-- finishes what a dead one reserved but never posted (a crisis reply, a caution note, a case card).
CREATE TABLE instances (
    id            TEXT PRIMARY KEY,
    started_at    TEXT NOT NULL,
    heartbeat_at  TEXT NOT NULL
);
ALTER TABLE posts ADD COLUMN handled_by TEXT;
CREATE INDEX posts_handled_by ON posts (handled_by);
