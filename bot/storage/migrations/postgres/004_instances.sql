-- Version 4, PostgreSQL (as ../004_instances.sql): live processes, and which one acts on each post.
CREATE TABLE instances (
    id            TEXT PRIMARY KEY,
    started_at    TEXT NOT NULL,
    heartbeat_at  TEXT NOT NULL
);
ALTER TABLE posts ADD COLUMN handled_by TEXT;
CREATE INDEX posts_handled_by ON posts (handled_by);
