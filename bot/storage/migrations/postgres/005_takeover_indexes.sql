-- Version 5, PostgreSQL (as ../005_takeover_indexes.sql): indexes for the takeover sweep and the outbox.
CREATE INDEX IF NOT EXISTS cases_post ON cases (post_id);
CREATE INDEX IF NOT EXISTS platform_actions_post ON platform_actions (post_id, done_at);
