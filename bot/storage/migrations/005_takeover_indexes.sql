-- Version 5: indexes the takeover sweep (bot/storage/recovery.py) and the outbox need: a post's cases and its
-- pending platform actions are found without scanning those tables.
CREATE INDEX IF NOT EXISTS cases_post ON cases (post_id);
CREATE INDEX IF NOT EXISTS platform_actions_post ON platform_actions (post_id, done_at);
