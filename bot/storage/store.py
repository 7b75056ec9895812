"""`Store`: one SQLite connection, explicit transactions, posts, decisions, replies, cooldowns and settings.

Every read a moderator can trigger takes the community it is for: one server never sees another's data.
Writes run inside `transaction()`; a caller groups several writes (a whole post: post, decision, case,
reply and cooldown reservation) in one transaction so they hold together under concurrency.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from datetime import datetime, timedelta
from typing import Any, cast

import aiosqlite

from bot.engine.decision import Decision, Post
from bot.storage.base import Result, Row
from bot.storage.cases import CaseConflict, CaseNotFound, CasesMixin
from bot.storage.clock import iso, utcnow
from bot.storage.dashboard import DashboardQueriesMixin
from bot.storage.db import DatabaseBusy, is_busy, open_db
from bot.storage.outbox import OutboxMixin, SessionsMixin
from bot.storage.policies import PolicyMixin
from bot.storage.privacy import PrivacyMixin
from bot.storage.recovery import RecoveryMixin
from bot.storage.rows import CommunityDecisionRow, DecisionRow, PostRow
from bot.storage.stats import StatsMixin

def is_postgres_url(target) -> bool:
    """Does `target` (CAVEAT_DB, `--db`) name a PostgreSQL database rather than a SQLite file?"""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


REPLAYED = 2  # decisions.shadow of a post from a replayed history

__all__ = ["CaseConflict", "CaseNotFound", "DatabaseBusy", "Store", "channel_scope", "community_scope"]

log = logging.getLogger("caveat.storage")


def community_scope(community_id: str) -> str:
    """The settings scope of a community."""
    return f"community:{community_id}"


def channel_scope(community_id: str, channel_id: str) -> str:
    """The settings scope of one channel of a community (a channel of another server never matches)."""
    return f"community:{community_id}/channel:{channel_id}"


class Store(CasesMixin, OutboxMixin, SessionsMixin, PrivacyMixin, StatsMixin, DashboardQueriesMixin, PolicyMixin,
            RecoveryMixin):
    """All persistent state of Caveat behind one aiosqlite connection."""

    def __init__(self, conn: aiosqlite.Connection):
        self.conn = conn
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task | None = None

    #: "sqlite" here; "postgresql" for `bot.storage.postgres.PostgresStore`.
    dialect = "sqlite"

    @classmethod
    async def open(cls, target) -> "Store":
        """Open and migrate the database at `target`: a SQLite file path, or a `postgresql://` URL."""
        if is_postgres_url(target):
            from bot.storage.postgres import PostgresStore  # asyncpg is only needed for PostgreSQL
            return await PostgresStore.open(str(target))
        return cls(await open_db(target))

    async def close(self) -> None:
        """Close the connection."""
        await self.conn.close()

    async def applied_migrations(self) -> set[int]:
        """The numbers of the migrations applied to this database; raises when the database does not answer."""
        await self._one("SELECT 1 AS ok")
        return {row["version"] for row in await self._all("SELECT version FROM schema_migrations")}

    #: How long a write keeps trying while another connection (another Caveat process: a replay, a purge, the
    #: dashboard or the bot) holds the database's write lock, before it raises `DatabaseBusy`. Each try waits up to
    #: the connection's busy timeout inside SQLite (`db.BUSY_TIMEOUT_MS`), so the budget is checked between tries.
    busy_budget_s: float = 30.0
    #: Pause before the first retry, doubled after each (up to `busy_backoff_max_s`).
    busy_backoff_s: float = 0.05
    busy_backoff_max_s: float = 1.0
    #: After a transaction that held the write lock for `long_hold_s` or more (a replay chunk), the same task's
    #: next transaction waits until `yield_s` after that commit, so a writer in another process gets its turn
    #: (SQLite's busy handler polls every 100 ms at best and is not fair: back-to-back chunks would starve it).
    #: Other tasks of this process are not delayed: they queue on the store's lock, which is fair.
    long_hold_s: float = 0.1
    yield_s: float = 0.1
    _yield_until: tuple[asyncio.Task | None, float] = (None, 0.0)

    @contextlib.asynccontextmanager
    async def transaction(self, *, community: str | None = None):
        """One atomic unit of work: BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error. SQLite has one writer at a
        time whatever `community` says.

        Nested use by the same task joins the outer transaction. Other tasks wait for the lock, so their
        writes never land inside someone else's transaction on the shared connection. A BEGIN (or COMMIT) that
        finds the database locked by another connection is retried with backoff for `busy_budget_s`, then raises
        `DatabaseBusy`. Whatever fails, or is cancelled, the connection is never left inside a transaction.
        After a commit that removed members' text, the write-ahead log is checkpointed (`_scrub`).
        """
        task = asyncio.current_task()
        if self._owner is task:
            yield self
            return
        loop = asyncio.get_running_loop()
        if self._yield_until[0] is task and self._yield_until[1] > loop.time():
            await asyncio.sleep(self._yield_until[1] - loop.time())
        async with self._lock:
            self._owner = task
            began = None
            try:
                await self._begin()
                began = loop.time()
                try:
                    yield self
                except BaseException:
                    await self._rollback()
                    raise
                await self._commit()
                if self._scrub_needed:
                    self._scrub_needed = False
                    await self._scrub()
            finally:
                self._scrub_needed = False
                self._owner = None
                if began is not None and loop.time() - began >= self.long_hold_s:
                    self._yield_until = (task, loop.time() + self.yield_s)
                elif self._yield_until[0] is task:
                    self._yield_until = (None, 0.0)

    async def _retry_busy(self, statement: str, *, still_valid=lambda: True) -> None:
        """Run BEGIN IMMEDIATE or COMMIT, retrying while another connection holds the lock (`busy_budget_s`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.busy_budget_s
        delay, tries, nested = self.busy_backoff_s, 0, False
        while True:
            tries += 1
            try:
                await self._exec(statement)
                return
            except sqlite3.OperationalError as exc:
                if statement.startswith("BEGIN") and "within a transaction" in str(exc) and not nested:
                    # A transaction nobody owns (left by code outside transaction()): undo it and start ours.
                    log.warning("rolling back a transaction that was left open on the store's connection")
                    nested = True
                    await self._rollback()
                    continue
                if not is_busy(exc) or not still_valid():
                    raise
                left = deadline - loop.time()
                if left <= 0:
                    raise DatabaseBusy(
                        f"database is locked: another connection held the write lock for more than "
                        f"{self.busy_budget_s:g} s ({tries} tries of {statement.split()[0]}); nothing was written"
                    ) from exc
                if tries == 1:
                    log.info("database is locked by another connection; retrying %s for up to %.0f s",
                             statement.split()[0], self.busy_budget_s)
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, self.busy_backoff_max_s)

    async def _begin(self) -> None:
        try:
            await self._retry_busy("BEGIN IMMEDIATE")
        except BaseException:
            # Also when cancelled: the BEGIN may still be waiting in aiosqlite's thread and succeed there later.
            # Statements run in order, so this ROLLBACK runs after it and undoes it before anyone else's BEGIN.
            await self._rollback()
            raise

    async def _commit(self) -> None:
        try:
            # A COMMIT that meets a lock leaves the transaction open (SQLite): retry it while that is so.
            await self._retry_busy("COMMIT", still_valid=lambda: self.conn.in_transaction)
        except BaseException:
            await self._rollback()  # no-op when the COMMIT went through (say, cancelled while it ran)
            raise

    async def _rollback(self) -> None:
        """ROLLBACK whether or not a transaction is open; errors are logged, never raised over the original one.

        Should a ROLLBACK itself fail, the next BEGIN finds the open transaction and rolls it back first.
        """
        try:
            await self._exec("ROLLBACK")
        except Exception as exc:
            if "no transaction is active" not in str(exc):
                log.error("ROLLBACK failed: %s: %s", type(exc).__name__, exc)

    def batch(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """Bulk replay groups many posts in one transaction; a name that says what it is for."""
        return self.transaction()

    async def _one(self, sql: str, args: tuple = ()) -> Row | None:
        async with self.conn.execute(sql, args) as cur:
            return await cur.fetchone()

    async def _all(self, sql: str, args: tuple = ()) -> list[Row]:
        async with self.conn.execute(sql, args) as cur:
            return list(await cur.fetchall())

    async def _exec(self, sql: str, args: tuple = ()) -> Result:
        """Run one statement on the store's connection (inside the caller's transaction for writes)."""
        cur = await self.conn.execute(sql, args)
        return Result(cur.rowcount, cur.lastrowid)

    def _in_transaction(self) -> bool:
        """Is the current task inside one of this store's transactions?"""
        return self._owner is asyncio.current_task()

    # -- posts and decisions -------------------------------------------------------------------
    async def upsert_post(self, post: Post, *, now: datetime | None = None) -> tuple[int, bool]:
        """Store a post once per (platform, message id); returns (post id, newly stored?)."""
        async with self.transaction():
            cur = await self._exec(
                "INSERT INTO posts (platform, message_id, community_id, channel_id, channel_name, author_id,"
                " author_name, text, url, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (platform, message_id) DO NOTHING",
                (post.platform, post.message_id, post.community_id, post.channel_id, post.channel_name,
                 post.author_id, post.author_name, post.text, post.url, iso(post.created_at or now)))
            new = cur.rowcount == 1
            row = await self._one("SELECT id FROM posts WHERE platform=? AND message_id=?",
                                  (post.platform, post.message_id))
        if row is None:  # cannot happen inside the transaction that inserted or found it
            raise LookupError(f"post {post.platform}/{post.message_id} vanished while it was stored")
        return row["id"], new

    async def edit_post(self, post_id: int, text: str, *, now: datetime | None = None) -> None:
        """Replace a post's text after an edit (not for deleted or purged posts)."""
        await self._write("UPDATE posts SET text=?, edited_at=? WHERE id=? AND deleted_at IS NULL AND purged_at IS NULL",
                          (text, iso(now), post_id))

    async def post(self, post_id: int, *, community: str) -> PostRow | None:
        """One stored post of `community` as a dict."""
        row = await self._one("SELECT * FROM posts WHERE id=? AND community_id=?", (post_id, community))
        return cast(PostRow, dict(row)) if row else None

    async def post_by_message(self, platform: str, message_id: str) -> PostRow | None:
        """A stored post by its platform message id (platform ids are unique across communities)."""
        row = await self._one("SELECT * FROM posts WHERE platform=? AND message_id=?", (platform, message_id))
        return cast(PostRow, dict(row)) if row else None

    async def save_decision(self, post_id: int, decision: Decision, *, community: str, shadow: bool = False,
                            replayed: bool = False, now: datetime | None = None) -> int:
        """Store a decision (before anything is posted) and count it in the anonymized daily totals.

        Column `shadow`: 0 live, 1 shadow mode, 2 replayed history (never counted as live activity)."""
        at = iso(now)
        async with self.transaction():
            cur = await self._exec(
                "INSERT INTO decisions (post_id, created_at, action, labels, scores, detail, note_id, topic, mode,"
                " shadow, model_version, policy_version) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (post_id, at, decision.action, json.dumps(list(decision.labels)), json.dumps(decision.scores),
                 json.dumps(decision.to_dict()), decision.note_id, decision.topic, decision.mode,
                 REPLAYED if replayed else int(shadow),
                 decision.model_version, decision.policy_version))
            for label in () if replayed else decision.labels or ("benign",):
                await self._exec(
                    "INSERT INTO daily_counts (community_id, day, label, action, count) VALUES (?,?,?,?,1)"
                    " ON CONFLICT (community_id, day, label, action) DO UPDATE SET count = daily_counts.count + 1",
                    (community, at[:10], label, decision.action))
        return cur.new_id

    async def decision(self, decision_id: int, *, community: str) -> CommunityDecisionRow | None:
        """A stored decision of `community` with its detail parsed (None for another community's)."""
        row = await self._one("SELECT d.*, p.community_id, p.author_id FROM decisions d JOIN posts p ON p.id = d.post_id"
                              " WHERE d.id=? AND p.community_id=?", (decision_id, community))
        return cast(CommunityDecisionRow, _decision_row(row)) if row else None

    async def latest_decision(self, post_id: int) -> DecisionRow | None:
        """The newest decision for a post."""
        row = await self._one("SELECT * FROM decisions WHERE post_id=? ORDER BY id DESC LIMIT 1", (post_id,))
        return _decision_row(row) if row else None

    # -- replies (idempotency of public actions) -----------------------------------------------
    async def claim_reply(self, post_id: int, kind: str, *, now: datetime | None = None) -> bool:
        """Reserve the one public reply of `kind` for a post; False if it was already made."""
        cur = await self._write("INSERT OR IGNORE INTO replies (post_id, kind, created_at) VALUES (?,?,?)",
                                (post_id, kind, iso(now)))
        return cur.rowcount == 1

    async def set_reply_message(self, post_id: int, kind: str, message_id: str | None) -> None:
        """Remember the platform id of the reply that was posted."""
        await self._write("UPDATE replies SET message_id=? WHERE post_id=? AND kind=?", (message_id, post_id, kind))

    async def release_reply(self, post_id: int, kind: str) -> None:
        """Give back a reserved reply when posting it failed, so a retry may post it."""
        await self._write("DELETE FROM replies WHERE post_id=? AND kind=?", (post_id, kind))

    async def replies(self, post_id: int) -> dict[str, str | None]:
        """Replies made for a post: {kind: platform message id}."""
        rows = await self._all("SELECT kind, message_id FROM replies WHERE post_id=?", (post_id,))
        return {r["kind"]: r["message_id"] for r in rows}

    # -- cooldowns -------------------------------------------------------------------------------
    async def note_allowed(self, community: str, channel_id: str, author_id: str, topic: str, *,
                           per_user_topic_hours: float, per_channel_notes: int, per_channel_window_minutes: float,
                           now: datetime | None = None) -> tuple[bool, str | None]:
        """May a public note go out now? Returns (allowed, reason when not). Call inside the reserving transaction."""
        now = now or utcnow()
        since_user = iso(now - timedelta(hours=per_user_topic_hours))
        if await self._count("SELECT COUNT(*) AS n FROM cooldowns WHERE community_id=? AND author_id=? AND topic=?"
                             " AND at > ?", (community, author_id, topic, since_user)) > 0:
            return False, f"this member already got a note on '{topic}' in the last {per_user_topic_hours:g} h"
        since_channel = iso(now - timedelta(minutes=per_channel_window_minutes))
        if await self._count("SELECT COUNT(*) AS n FROM cooldowns WHERE community_id=? AND channel_id=? AND at > ?",
                             (community, channel_id, since_channel)) >= per_channel_notes:
            return False, (f"{per_channel_notes} notes already sent in this channel in the last "
                           f"{per_channel_window_minutes:g} min")
        return True, None

    async def record_note(self, community: str, channel_id: str, author_id: str, topic: str, *,
                          now: datetime | None = None) -> int:
        """Count a public note against the cooldowns; returns the reservation id (to release on failure)."""
        cur = await self._write("INSERT INTO cooldowns (community_id, channel_id, author_id, topic, at)"
                                " VALUES (?,?,?,?,?)", (community, channel_id, author_id, topic, iso(now)))
        return cur.new_id

    async def release_note(self, cooldown_id: int) -> None:
        """Undo a cooldown reservation whose note could not be posted."""
        await self._write("DELETE FROM cooldowns WHERE id=?", (cooldown_id,))

    # -- feedback and settings -------------------------------------------------------------------
    async def add_feedback(self, decision_id: int, user_id: str, kind: str, reason: str | None = None,
                           *, now: datetime | None = None) -> bool:
        """Store a member's reaction to a note; False if they already gave this kind."""
        cur = await self._write(
            "INSERT OR IGNORE INTO feedback (decision_id, user_id, kind, reason, at) VALUES (?,?,?,?,?)",
            (decision_id, user_id, kind, reason, iso(now)))
        return cur.rowcount == 1

    async def feedback(self, decision_id: int) -> dict[str, int]:
        """Counts of feedback kinds for a decision."""
        rows = await self._all("SELECT kind, COUNT(*) AS n FROM feedback WHERE decision_id=? GROUP BY kind",
                               (decision_id,))
        return {r["kind"]: r["n"] for r in rows}

    async def dispute_reason(self, decision_id: int) -> str | None:
        """The latest dispute reason given for a decision (None once purged)."""
        row = await self._one("SELECT reason FROM feedback WHERE decision_id=? AND kind='dispute' ORDER BY id DESC LIMIT 1",
                              (decision_id,))
        return row["reason"] if row else None

    async def get_setting(self, scope: str, key: str, default: Any = None) -> Any:
        """A stored override (JSON value) or `default`."""
        row = await self._one("SELECT value FROM settings WHERE scope=? AND key=?", (scope, key))
        return json.loads(row["value"]) if row else default

    async def settings(self, scope: str) -> dict[str, Any]:
        """Every stored override of one scope."""
        return {r["key"]: json.loads(r["value"]) for r in await self._all("SELECT key, value FROM settings WHERE scope=?",
                                                                          (scope,))}

    async def set_setting(self, scope: str, key: str, value: Any) -> None:
        """Store an override, e.g. (channel_scope(guild, channel), 'shadow_mode', True)."""
        await self._write("INSERT INTO settings (scope, key, value) VALUES (?,?,?) ON CONFLICT (scope, key)"
                          " DO UPDATE SET value=excluded.value", (scope, key, json.dumps(value)))

    async def communities(self) -> list[str]:
        """Communities that have posts (for the operator's community picker)."""
        return [r["community_id"] for r in await self._all(
            "SELECT DISTINCT community_id FROM posts ORDER BY community_id")]


def _decision_row(row) -> DecisionRow:
    d = dict(row)
    d["detail"] = json.loads(d["detail"])
    d["labels"] = json.loads(d["labels"])
    d["scores"] = json.loads(d["scores"])
    return cast(DecisionRow, d)
