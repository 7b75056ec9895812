-- Caveat storage, version 1. Text of posts lives only in posts.text (and feedback.reason), so deletion and
-- retention can purge it in one place; decisions keep rule offsets and are redacted with the post.
CREATE TABLE posts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    platform      TEXT NOT NULL,
    message_id    TEXT NOT NULL,
    community_id  TEXT NOT NULL DEFAULT '',
    channel_id    TEXT NOT NULL,
    channel_name  TEXT NOT NULL DEFAULT '',
    author_id     TEXT NOT NULL,
    author_name   TEXT,
    text          TEXT,
    url           TEXT,
    created_at    TEXT NOT NULL,
    edited_at     TEXT,
    deleted_at    TEXT,
    purged_at     TEXT,
    UNIQUE (platform, message_id)
);
CREATE INDEX posts_author ON posts (author_id);
CREATE INDEX posts_created ON posts (created_at);

CREATE TABLE decisions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    post_id         INTEGER NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    created_at      TEXT NOT NULL,
    action          TEXT NOT NULL,
    labels          TEXT NOT NULL,      -- JSON list
    scores          TEXT NOT NULL,      -- JSON {label: score}
    detail          TEXT NOT NULL,      -- JSON: full Decision.to_dict() (rules with spans, why)
    note_id         TEXT,
    topic           TEXT,
    mode            TEXT NOT NULL,
    shadow          INTEGER NOT NULL DEFAULT 0,
    model_version   TEXT NOT NULL,
    policy_version  TEXT NOT NULL
);
CREATE INDEX decisions_post ON decisions (post_id);

CREATE TABLE cases (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    post_id       INTEGER NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    decision_id   INTEGER NOT NULL REFERENCES decisions (id),
    community_id  TEXT NOT NULL DEFAULT '',
    channel_id    TEXT NOT NULL,
    label         TEXT,
    action        TEXT NOT NULL,
    priority      INTEGER NOT NULL,     -- 4 = emergency ... 1 = note only
    kind          TEXT NOT NULL DEFAULT 'flag',   -- flag | dispute | shadow
    status        TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'claimed', 'resolved')),
    claimed_by    TEXT,
    claimed_at    TEXT,
    resolved_by   TEXT,
    resolved_at   TEXT,
    resolution    TEXT,
    reason_code   TEXT,
    card_message_id TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX cases_status ON cases (status, priority, created_at);

-- Append-only: no text of posts, only ids, actors and codes.
CREATE TABLE audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    case_id     INTEGER,
    post_id     INTEGER,
    decision_id INTEGER,
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;

CREATE TABLE replies (
    post_id     INTEGER NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,           -- note | resources
    message_id  TEXT,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (post_id, kind)
);

CREATE TABLE cooldowns (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id  TEXT NOT NULL,
    author_id   TEXT NOT NULL,
    topic       TEXT NOT NULL,
    at          TEXT NOT NULL
);
CREATE INDEX cooldowns_user ON cooldowns (author_id, topic, at);
CREATE INDEX cooldowns_channel ON cooldowns (channel_id, at);

CREATE TABLE feedback (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    decision_id  INTEGER NOT NULL REFERENCES decisions (id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('helpful', 'not_helpful', 'dispute')),
    reason       TEXT,
    at           TEXT NOT NULL,
    UNIQUE (decision_id, user_id, kind)
);

CREATE TABLE settings (
    scope   TEXT NOT NULL,    -- 'channel:<id>' or 'community:<id>'
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);

-- Anonymized counts that survive retention purges.
CREATE TABLE daily_counts (
    day     TEXT NOT NULL,
    label   TEXT NOT NULL,
    action  TEXT NOT NULL,
    count   INTEGER NOT NULL,
    PRIMARY KEY (day, label, action)
);
