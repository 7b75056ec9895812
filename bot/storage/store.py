"""`Store`: posts, decisions, cases and their locking, the audit log, cooldowns, feedback and settings."""
from __future__ import annotations

import contextlib
import json
from datetime import datetime, timedelta
from typing import Any

import aiosqlite

from bot.engine.decision import Decision, Post
from bot.storage.clock import iso, utcnow
from bot.storage.db import open_db
from bot.storage.privacy import PrivacyMixin
from bot.storage.stats import StatsMixin


RESOLUTIONS = ("sent_note", "dismissed", "removed", "escalated", "deleted", "expired")


class CaseNotFound(LookupError):
    """No case with that id."""


class CaseConflict(RuntimeError):
    """A case action refused: claimed by someone else, or already resolved."""

    def __init__(self, message: str, holder: str | None = None):
        super().__init__(message)
        self.holder = holder


class Store(PrivacyMixin, StatsMixin):
    """All persistent state of Caveat behind one aiosqlite connection."""

    def __init__(self, conn: aiosqlite.Connection):
        self.conn = conn
        self._batch_depth = 0

    async def _commit(self) -> None:
        """Commit now, unless inside `batch()` (which commits once at its end)."""
        if not self._batch_depth:
            await self.conn.commit()

    @contextlib.asynccontextmanager
    async def batch(self):
        """Group many writes into one transaction (bulk replay): one commit at the end, a rollback on error.

        Only for callers that can redo the whole group (replay skips posts it already stored); live paths
        commit every write before anything is posted.
        """
        self._batch_depth += 1
        try:
            yield self
        except BaseException:
            self._batch_depth -= 1
            if not self._batch_depth:
                await self.conn.rollback()
            raise
        self._batch_depth -= 1
        if not self._batch_depth:
            await self.conn.commit()

    @classmethod
    async def open(cls, path) -> "Store":
        """Open and migrate the database at `path`."""
        return cls(await open_db(path))

    async def close(self) -> None:
        """Close the connection."""
        await self.conn.close()

    async def _one(self, sql: str, args: tuple = ()) -> aiosqlite.Row | None:
        async with self.conn.execute(sql, args) as cur:
            return await cur.fetchone()

    async def _all(self, sql: str, args: tuple = ()) -> list[aiosqlite.Row]:
        async with self.conn.execute(sql, args) as cur:
            return list(await cur.fetchall())

    # -- posts and decisions -------------------------------------------------------------------
    async def upsert_post(self, post: Post, *, now: datetime | None = None) -> tuple[int, bool]:
        """Store a post once per (platform, message id); returns (post id, newly stored?)."""
        cur = await self.conn.execute(
            "INSERT INTO posts (platform, message_id, community_id, channel_id, channel_name, author_id, author_name,"
            " text, url, created_at) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (platform, message_id) DO NOTHING",
            (post.platform, post.message_id, post.community_id, post.channel_id, post.channel_name, post.author_id,
             post.author_name, post.text, post.url, iso(post.created_at or now)))
        new = cur.rowcount == 1
        row = await self._one("SELECT id FROM posts WHERE platform=? AND message_id=?", (post.platform, post.message_id))
        await self._commit()
        return row["id"], new

    async def edit_post(self, post_id: int, text: str, *, now: datetime | None = None) -> None:
        """Replace a post's text after an edit (not for deleted or purged posts)."""
        await self.conn.execute("UPDATE posts SET text=?, edited_at=? WHERE id=? AND deleted_at IS NULL AND purged_at IS NULL",
                                (text, iso(now), post_id))
        await self._commit()

    async def post(self, post_id: int) -> dict | None:
        """One stored post as a dict."""
        row = await self._one("SELECT * FROM posts WHERE id=?", (post_id,))
        return dict(row) if row else None

    async def post_by_message(self, platform: str, message_id: str) -> dict | None:
        """A stored post by its platform message id."""
        row = await self._one("SELECT * FROM posts WHERE platform=? AND message_id=?", (platform, message_id))
        return dict(row) if row else None

    async def save_decision(self, post_id: int, decision: Decision, *, shadow: bool = False,
                            now: datetime | None = None) -> int:
        """Store a decision (before anything is posted) and count it in the anonymized daily totals."""
        at = iso(now)
        cur = await self.conn.execute(
            "INSERT INTO decisions (post_id, created_at, action, labels, scores, detail, note_id, topic, mode, shadow,"
            " model_version, policy_version) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (post_id, at, decision.action, json.dumps(list(decision.labels)), json.dumps(decision.scores),
             json.dumps(decision.to_dict()), decision.note_id, decision.topic, decision.mode, int(shadow),
             decision.model_version, decision.policy_version))
        for label in decision.labels or ("benign",):
            await self.conn.execute(
                "INSERT INTO daily_counts (day, label, action, count) VALUES (?,?,?,1)"
                " ON CONFLICT (day, label, action) DO UPDATE SET count = count + 1",
                (at[:10], label, decision.action))
        await self._commit()
        return cur.lastrowid

    async def decision(self, decision_id: int) -> dict | None:
        """A stored decision with its detail parsed."""
        row = await self._one("SELECT * FROM decisions WHERE id=?", (decision_id,))
        return _decision_row(row) if row else None

    async def latest_decision(self, post_id: int) -> dict | None:
        """The newest decision for a post."""
        row = await self._one("SELECT * FROM decisions WHERE post_id=? ORDER BY id DESC LIMIT 1", (post_id,))
        return _decision_row(row) if row else None

    # -- replies (idempotency of public actions) -----------------------------------------------
    async def claim_reply(self, post_id: int, kind: str, *, now: datetime | None = None) -> bool:
        """Reserve the one public reply of `kind` for a post; False if it was already made."""
        cur = await self.conn.execute("INSERT OR IGNORE INTO replies (post_id, kind, created_at) VALUES (?,?,?)",
                                      (post_id, kind, iso(now)))
        await self._commit()
        return cur.rowcount == 1

    async def set_reply_message(self, post_id: int, kind: str, message_id: str | None) -> None:
        """Remember the platform id of the reply that was posted."""
        await self.conn.execute("UPDATE replies SET message_id=? WHERE post_id=? AND kind=?", (message_id, post_id, kind))
        await self._commit()

    async def release_reply(self, post_id: int, kind: str) -> None:
        """Give back a reserved reply when posting it failed, so a retry may post it."""
        await self.conn.execute("DELETE FROM replies WHERE post_id=? AND kind=?", (post_id, kind))
        await self._commit()

    async def replies(self, post_id: int) -> dict[str, str | None]:
        """Replies made for a post: {kind: platform message id}."""
        rows = await self._all("SELECT kind, message_id FROM replies WHERE post_id=?", (post_id,))
        return {r["kind"]: r["message_id"] for r in rows}

    # -- cases -----------------------------------------------------------------------------------
    async def open_case(self, post_id: int, decision_id: int, decision: Decision, *, channel_id: str,
                        community_id: str = "", kind: str = "flag", now: datetime | None = None) -> int:
        """Open a case for a post, or point its unresolved case at the newer decision."""
        at = iso(now)
        label = decision.labels[0] if decision.labels else None
        row = await self._one("SELECT id FROM cases WHERE post_id=? AND kind=? AND status != 'resolved'", (post_id, kind))
        if row:
            await self.conn.execute(
                "UPDATE cases SET decision_id=?, label=?, action=?, priority=?, updated_at=? WHERE id=?",
                (decision_id, label, decision.action, decision.severity, at, row["id"]))
            await self._commit()
            return row["id"]
        cur = await self.conn.execute(
            "INSERT INTO cases (post_id, decision_id, community_id, channel_id, label, action, priority, kind,"
            " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (post_id, decision_id, community_id, channel_id, label, decision.action, decision.severity, kind, at, at))
        await self._commit()
        return cur.lastrowid

    async def has_open_case(self, post_id: int) -> bool:
        """Does this post have an unresolved case?"""
        return await self._one("SELECT 1 FROM cases WHERE post_id=? AND status != 'resolved'", (post_id,)) is not None

    async def case(self, case_id: int) -> dict:
        """A case joined with its post and decision; raises CaseNotFound."""
        row = await self._one(
            "SELECT c.*, p.text, p.author_id, p.author_name, p.url, p.platform, p.message_id, p.channel_name,"
            " p.created_at AS posted_at, p.deleted_at, d.detail, d.scores, d.labels, d.note_id, d.model_version,"
            " d.policy_version, d.mode, d.shadow FROM cases c JOIN posts p ON p.id = c.post_id"
            " JOIN decisions d ON d.id = c.decision_id WHERE c.id=?", (case_id,))
        if row is None:
            raise CaseNotFound(f"no case #{case_id}")
        return _case_row(row)

    async def cases(self, *, status: str | None = "open", label: str | None = None, channel_id: str | None = None,
                    kind: str | None = None, sort: str = "severity", limit: int = 50, offset: int = 0,
                    author_id: str | None = None) -> list[dict]:
        """Cases filtered by status ('open' means open or claimed), label, channel; sorted by severity or age."""
        where, args = [], []
        if status == "open":
            where.append("c.status != 'resolved'")
        elif status:
            where.append("c.status = ?")
            args.append(status)
        for col, val in (("c.label", label), ("c.channel_id", channel_id), ("c.kind", kind), ("p.author_id", author_id)):
            if val:
                where.append(f"{col} = ?")
                args.append(val)
        order = {"severity": "c.priority DESC, c.created_at ASC", "oldest": "c.created_at ASC, c.id ASC",
                 "newest": "c.created_at DESC, c.id DESC"}.get(sort)
        if order is None:
            raise ValueError(f"unknown sort '{sort}' (severity, oldest, newest)")
        sql = ("SELECT c.*, p.text, p.author_id, p.author_name, p.url, p.platform, p.message_id, p.channel_name,"
               " p.created_at AS posted_at, p.deleted_at, d.detail, d.scores, d.labels, d.note_id, d.model_version,"
               " d.policy_version, d.mode, d.shadow FROM cases c JOIN posts p ON p.id = c.post_id"
               " JOIN decisions d ON d.id = c.decision_id"
               + (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY {order} LIMIT ? OFFSET ?")
        return [_case_row(r) for r in await self._all(sql, tuple(args) + (limit, offset))]

    async def count_cases(self, *, status: str = "open") -> int:
        """How many cases are open (open or claimed) or in the given status."""
        if status == "open":
            row = await self._one("SELECT COUNT(*) AS n FROM cases WHERE status != 'resolved'")
        else:
            row = await self._one("SELECT COUNT(*) AS n FROM cases WHERE status = ?", (status,))
        return row["n"]

    async def claim(self, case_id: int, moderator: str, *, now: datetime | None = None) -> dict:
        """Lock a case to `moderator`; refused (CaseConflict) if another moderator holds it or it is resolved."""
        case = await self.case(case_id)
        if case["status"] == "resolved":
            raise CaseConflict(f"case #{case_id} is already resolved ({case['resolution']})", case["resolved_by"])
        if case["status"] == "claimed" and case["claimed_by"] != moderator:
            raise CaseConflict(f"case #{case_id} is claimed by {case['claimed_by']}", case["claimed_by"])
        cur = await self.conn.execute(
            "UPDATE cases SET status='claimed', claimed_by=?, claimed_at=?, updated_at=? WHERE id=?"
            " AND (status='open' OR claimed_by=?)", (moderator, iso(now), iso(now), case_id, moderator))
        await self._commit()
        if cur.rowcount != 1:  # lost a race with another claim
            return await self.claim(case_id, moderator, now=now)
        await self.audit(moderator, "claim", case_id=case_id, post_id=case["post_id"], now=now)
        return await self.case(case_id)

    async def resolve(self, case_id: int, moderator: str, resolution: str, *, reason_code: str | None = None,
                      now: datetime | None = None) -> dict:
        """Close a case with an outcome; an open case is claimed on the way, another's claim is refused."""
        if resolution not in RESOLUTIONS:
            raise ValueError(f"unknown resolution '{resolution}' (one of: {', '.join(RESOLUTIONS)})")
        case = await self.case(case_id)
        if case["status"] == "resolved":
            raise CaseConflict(f"case #{case_id} is already resolved ({case['resolution']})", case["resolved_by"])
        if case["status"] == "claimed" and case["claimed_by"] != moderator:
            raise CaseConflict(f"case #{case_id} is claimed by {case['claimed_by']}", case["claimed_by"])
        at = iso(now)
        cur = await self.conn.execute(
            "UPDATE cases SET status='resolved', claimed_by=COALESCE(claimed_by, ?), resolved_by=?, resolved_at=?,"
            " resolution=?, reason_code=?, updated_at=? WHERE id=? AND status != 'resolved'"
            " AND (claimed_by IS NULL OR claimed_by=?)",
            (moderator, moderator, at, resolution, reason_code, at, case_id, moderator))
        await self._commit()
        if cur.rowcount != 1:
            latest = await self.case(case_id)
            raise CaseConflict(f"case #{case_id} changed hands", latest["claimed_by"])
        await self.audit(moderator, resolution, case_id=case_id, post_id=case["post_id"],
                         detail={"reason_code": reason_code}, now=now)
        return await self.case(case_id)

    async def set_case_card(self, case_id: int, message_id: str) -> None:
        """Remember the moderators' channel message that shows this case."""
        await self.conn.execute("UPDATE cases SET card_message_id=? WHERE id=?", (message_id, case_id))
        await self._commit()

    # -- audit ---------------------------------------------------------------------------------
    async def audit(self, actor: str, action: str, *, case_id: int | None = None, post_id: int | None = None,
                    decision_id: int | None = None, detail: dict | None = None, now: datetime | None = None) -> int:
        """Append one event to the audit log (ids and codes only, never message text)."""
        cur = await self.conn.execute(
            "INSERT INTO audit (at, actor, action, case_id, post_id, decision_id, detail) VALUES (?,?,?,?,?,?,?)",
            (iso(now), actor, action, case_id, post_id, decision_id, json.dumps(detail or {})))
        await self._commit()
        return cur.lastrowid

    async def audit_log(self, *, actor: str | None = None, action: str | None = None, case_id: int | None = None,
                        limit: int = 200, offset: int = 0) -> list[dict]:
        """Audit events, newest first, optionally filtered."""
        where, args = [], []
        for col, val in (("actor", actor), ("action", action), ("case_id", case_id)):
            if val is not None and val != "":
                where.append(f"{col} = ?")
                args.append(val)
        sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ? OFFSET ?"
        return [dict(r) | {"detail": json.loads(r["detail"])} for r in await self._all(sql, tuple(args) + (limit, offset))]

    # -- cooldowns -------------------------------------------------------------------------------
    async def note_allowed(self, channel_id: str, author_id: str, topic: str, *, per_user_topic_hours: float,
                           per_channel_notes: int, per_channel_window_minutes: float,
                           now: datetime | None = None) -> tuple[bool, str | None]:
        """May a public note go out now? Returns (allowed, reason when not)."""
        now = now or utcnow()
        since_user = iso(now - timedelta(hours=per_user_topic_hours))
        row = await self._one("SELECT COUNT(*) AS n FROM cooldowns WHERE author_id=? AND topic=? AND at > ?",
                              (author_id, topic, since_user))
        if row["n"] > 0:
            return False, f"this member already got a note on '{topic}' in the last {per_user_topic_hours:g} h"
        since_channel = iso(now - timedelta(minutes=per_channel_window_minutes))
        row = await self._one("SELECT COUNT(*) AS n FROM cooldowns WHERE channel_id=? AND at > ?", (channel_id, since_channel))
        if row["n"] >= per_channel_notes:
            return False, f"{per_channel_notes} notes already sent in this channel in the last {per_channel_window_minutes:g} min"
        return True, None

    async def record_note(self, channel_id: str, author_id: str, topic: str, *, now: datetime | None = None) -> None:
        """Count a public note against the cooldowns."""
        await self.conn.execute("INSERT INTO cooldowns (channel_id, author_id, topic, at) VALUES (?,?,?,?)",
                                (channel_id, author_id, topic, iso(now)))
        await self._commit()

    # -- feedback and settings -------------------------------------------------------------------
    async def add_feedback(self, decision_id: int, user_id: str, kind: str, reason: str | None = None,
                           *, now: datetime | None = None) -> bool:
        """Store a member's reaction to a note; False if they already gave this kind."""
        cur = await self.conn.execute(
            "INSERT OR IGNORE INTO feedback (decision_id, user_id, kind, reason, at) VALUES (?,?,?,?,?)",
            (decision_id, user_id, kind, reason, iso(now)))
        await self._commit()
        return cur.rowcount == 1

    async def feedback(self, decision_id: int) -> dict[str, int]:
        """Counts of feedback kinds for a decision."""
        rows = await self._all("SELECT kind, COUNT(*) AS n FROM feedback WHERE decision_id=? GROUP BY kind", (decision_id,))
        return {r["kind"]: r["n"] for r in rows}

    async def get_setting(self, scope: str, key: str, default: Any = None) -> Any:
        """A stored override (JSON value) or `default`."""
        row = await self._one("SELECT value FROM settings WHERE scope=? AND key=?", (scope, key))
        return json.loads(row["value"]) if row else default

    async def set_setting(self, scope: str, key: str, value: Any) -> None:
        """Store an override, e.g. ('channel:123', 'shadow_mode', True)."""
        await self.conn.execute("INSERT INTO settings (scope, key, value) VALUES (?,?,?) ON CONFLICT (scope, key)"
                                " DO UPDATE SET value=excluded.value", (scope, key, json.dumps(value)))
        await self._commit()


def _decision_row(row) -> dict:
    d = dict(row)
    d["detail"] = json.loads(d["detail"])
    d["labels"] = json.loads(d["labels"])
    d["scores"] = json.loads(d["scores"])
    return d


def _case_row(row) -> dict:
    d = dict(row)
    for key in ("detail", "scores", "labels"):
        if key in d and isinstance(d[key], str):
            d[key] = json.loads(d[key])
    return d
