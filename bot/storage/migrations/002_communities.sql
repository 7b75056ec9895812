-- Version 2: every row that a moderator can see carries its community, so one server never sees another's
-- posts, cases, audit events, cooldowns or stats; the outbox of platform actions; per-moderator web sessions.
ALTER TABLE cooldowns ADD COLUMN community_id TEXT NOT NULL DEFAULT '';
CREATE INDEX cooldowns_community_user ON cooldowns (community_id, author_id, topic, at);
CREATE INDEX cooldowns_community_channel ON cooldowns (community_id, channel_id, at);

ALTER TABLE audit ADD COLUMN community_id TEXT NOT NULL DEFAULT '';
CREATE INDEX audit_community ON audit (community_id, id);

CREATE INDEX cases_community ON cases (community_id, status, priority, created_at);
CREATE INDEX posts_community_author ON posts (community_id, author_id);

CREATE TABLE daily_counts_v2 (
    community_id TEXT NOT NULL DEFAULT '',
    day     TEXT NOT NULL,
    label   TEXT NOT NULL,
    action  TEXT NOT NULL,
    count   INTEGER NOT NULL,
    PRIMARY KEY (community_id, day, label, action)
);
INSERT INTO daily_counts_v2 (community_id, day, label, action, count) SELECT '', day, label, action, count FROM daily_counts;
DROP TABLE daily_counts;
ALTER TABLE daily_counts_v2 RENAME TO daily_counts;

-- Things a moderator decided in one place (the dashboard) that the adapter owning the post must carry out
-- (Discord: post the note, delete the post, update the card). Rows are kept as the record of what was done.
CREATE TABLE platform_actions (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    community_id  TEXT NOT NULL,
    platform      TEXT NOT NULL,
    kind          TEXT NOT NULL,          -- post_note | delete_post | refresh_card | alert
    case_id       INTEGER,
    post_id       INTEGER,
    actor         TEXT NOT NULL,
    detail        TEXT NOT NULL DEFAULT '{}',
    created_at    TEXT NOT NULL,
    taken_at      TEXT,
    done_at       TEXT,
    result        TEXT
);
CREATE INDEX platform_actions_pending ON platform_actions (platform, done_at, id);

-- Dashboard sessions live here (not in a signed cookie) so logout and revocation end them at once.
CREATE TABLE web_sessions (
    id_sha256     TEXT PRIMARY KEY,
    moderator_id  TEXT NOT NULL,
    moderator     TEXT NOT NULL,
    community_id  TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('moderator', 'operator')),
    csrf          TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    revoked_at    TEXT
);
CREATE INDEX web_sessions_moderator ON web_sessions (community_id, moderator_id);

-- One-time login links a moderator gets from `/caveat dashboard` (only the hash is stored).
CREATE TABLE login_links (
    token_sha256  TEXT PRIMARY KEY,
    moderator_id  TEXT NOT NULL,
    moderator     TEXT NOT NULL,
    community_id  TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    used_at       TEXT
);

-- When an unattended emergency last re-alerted the on-call role.
ALTER TABLE cases ADD COLUMN realerted_at TEXT;
