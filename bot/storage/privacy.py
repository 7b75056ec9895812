"""Deleting posts, forgetting members and the retention purge: text goes, anonymized counts stay.

Removing text from the rows is not enough on disk: SQLite keeps old page versions in the write-ahead log (WAL)
until a checkpoint copies the newest versions into the database file and truncates the log. So every commit
that removed text is followed by `wal_checkpoint(TRUNCATE)` (`_scrub`, called by `Store.transaction()`); with
`secure_delete` on, the database file then holds zeros where the text was, and the -wal file is empty.

That checkpoint cannot complete while another connection (the dashboard or the bot in the other process, a
backup, an sqlite3 shell) is inside a read transaction that began before the deletion: that reader may still
read the old text, so SQLite must keep it. Caveat then retries in the background with backoff (at most every
`scrub_retry_max_s`) until that reader finishes, and the text is gone from every file at the first checkpoint
after it. A reader that never finishes keeps the text on disk for as long as it reads (a warning is logged after
`scrub_warn_after_s`); if this process stops first, the next `Store.open` finishes the checkpoint.

Bulk redactions (the retention purge, forgetting a member) run in chunks of `redact_chunk` posts, one short
transaction each with a pause between them, so another writer (a post arriving at the bot) never waits long.
"""
from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timedelta

from bot.storage.base import StoreBase
from bot.storage.clock import iso, utcnow
from bot.storage.db import checkpoint

REDACTED = "[removed]"

log = logging.getLogger("caveat.storage")


class PrivacyMixin(StoreBase):
    """Store methods that remove members' text everywhere it is kept."""

    #: Posts redacted per transaction by the retention purge and forget-me.
    redact_chunk: int = 200
    #: Pause between two chunks, so a writer in another process (SQLite polls every 100 ms) gets the lock.
    redact_pause_s: float = 0.1
    #: How long one checkpoint try waits for another connection's lock inside SQLite.
    scrub_wait_ms: int = 100
    #: Longest pause between two background checkpoint tries while a reader holds old text in the WAL.
    scrub_retry_max_s: float = 5.0
    #: Log a warning when a reader has kept deleted text on disk for this long.
    scrub_warn_after_s: float = 60.0

    _scrub_needed: bool = False           # the current transaction removed text: checkpoint after its commit
    _scrub_task: asyncio.Task | None = None

    def _mark_scrub(self) -> None:
        """The current transaction removed text: scrub old copies after its commit."""
        self._scrub_needed = True

    @property
    def scrub_pending(self) -> bool:
        """Is removed text still waiting for a checkpoint (a reader holds an older snapshot)?"""
        return self._scrub_task is not None and not self._scrub_task.done()

    async def _scrub(self) -> bool:
        """Checkpoint the WAL after a commit that removed text; retry in the background if a reader is in the way.

        Called by `transaction()` with the store's lock held, outside any transaction. Never raises (the text is
        already removed from the rows; only old copies on disk are at stake).
        """
        if self.scrub_pending:
            return False  # the background retry checkpoints everything, this commit included
        try:
            done = await checkpoint(self.conn, wait_ms=self.scrub_wait_ms)
        except asyncio.CancelledError:
            self._scrub_later()
            raise
        except Exception as exc:
            log.warning("checkpoint after a deletion failed (%s); retrying in the background", type(exc).__name__)
            done = False
        if not done:
            self._scrub_later()
        return done

    def _scrub_later(self) -> None:
        if not self.scrub_pending:
            self._scrub_task = asyncio.get_running_loop().create_task(self._scrub_retry(), name="caveat-scrub")

    async def _scrub_retry(self) -> None:
        loop = asyncio.get_running_loop()
        started, delay, warned = loop.time(), 0.05, False
        while True:
            await asyncio.sleep(delay)
            try:
                async with self._lock:  # never inside one of this connection's transactions
                    done = await checkpoint(self.conn, wait_ms=self.scrub_wait_ms)
            except ValueError:  # the store was closed; the next open checkpoints
                log.warning("store closed while deleted text waited for a checkpoint; the next open finishes it")
                return
            except Exception as exc:
                log.warning("checkpoint after a deletion failed (%s); retrying", type(exc).__name__)
                done = False
            waited = loop.time() - started
            if done:
                log.info("deleted text checkpointed out of the write-ahead log after %.1f s", waited)
                return
            if not warned and waited >= self.scrub_warn_after_s:
                warned = True
                log.warning("another connection has been reading for %.0f s and keeps deleted text in the"
                            " write-ahead log; retrying until it finishes", waited)
            delay = min(delay * 2, self.scrub_retry_max_s)

    async def _redact_post_rows(self, where: str, args: tuple, *, mark: str, now: datetime | None) -> list[int]:
        """Blank matching posts in chunks of `redact_chunk`, one transaction each; returns the ids blanked.

        The condition is checked again inside each chunk's transaction, so a post changed meanwhile is judged on
        its current row. An interrupted run leaves whole chunks done; running it again finishes the rest.
        """
        ids = [r["id"] for r in await self._all(f"SELECT id FROM posts WHERE {where} ORDER BY id", args)]
        joined = self._in_transaction()  # inside the caller's transaction: chunks cannot help
        done: list[int] = []
        for start in range(0, len(ids), self.redact_chunk):
            chunk = ids[start:start + self.redact_chunk]
            if start and not joined:
                await asyncio.sleep(self.redact_pause_s)
            async with self.transaction():
                done += await self._redact_in_tx(f"({where}) AND id IN ({','.join('?' * len(chunk))})",
                                                 (*args, *chunk), mark=mark, now=now)
        return done

    async def _redact_in_tx(self, where: str, args: tuple, *, mark: str, now: datetime | None) -> list[int]:
        """Blank the text of matching posts and every copy of it in their decisions and feedback."""
        rows = await self._all(f"SELECT id FROM posts WHERE {where}", args)
        ids = [r["id"] for r in rows]
        at = iso(now)
        for post_id in ids:
            await self._exec(
                f"UPDATE posts SET text=NULL, author_name=NULL, url=NULL, {mark}=COALESCE({mark}, ?) WHERE id=?",
                (at, post_id))
            for drow in await self._all("SELECT id, detail FROM decisions WHERE post_id=?", (post_id,)):
                detail = json.loads(drow["detail"])
                for rule in detail.get("rules", []):
                    rule["spans"] = [[s, e, None] for s, e, _ in rule.get("spans", [])]
                detail["why"] = REDACTED
                await self._exec("UPDATE decisions SET detail=? WHERE id=?", (json.dumps(detail), drow["id"]))
            await self._exec(
                "UPDATE feedback SET reason=NULL WHERE decision_id IN (SELECT id FROM decisions WHERE post_id=?)", (post_id,))
        if ids:
            self._mark_scrub()  # transaction() checkpoints after the commit
        return ids

    async def delete_post(self, platform: str, message_id: str, *, actor: str = "platform",
                          now: datetime | None = None) -> int | None:
        """The member deleted a post: purge its text and close its open cases. Returns the post id."""
        at = iso(now)
        async with self.transaction():
            ids = await self._redact_in_tx("platform=? AND message_id=?", (platform, message_id),
                                           mark="deleted_at", now=now)
            if not ids:
                return None
            post_id = ids[0]
            row = await self._one("SELECT community_id FROM posts WHERE id=?", (post_id,))
            community = row["community_id"] if row else ""
            open_cases = await self._all("SELECT id FROM cases WHERE post_id=? AND status != 'resolved'", (post_id,))
            await self._exec(
                "UPDATE cases SET status='resolved', resolution='deleted', resolved_by=?, resolved_at=?, updated_at=?"
                " WHERE post_id=? AND status != 'resolved'", (actor, at, at, post_id))
            await self.audit(actor, "post_deleted", community=community, post_id=post_id,
                             detail={"closed_cases": [r["id"] for r in open_cases]}, now=now)
        return post_id

    async def forget_user(self, author_id: str, *, community: str, actor: str | None = None,
                          now: datetime | None = None) -> int:
        """Remove a member's text from one community (posts, decisions, their feedback reasons); returns posts purged."""
        ids = await self._redact_post_rows("author_id=? AND community_id=?", (author_id, community),
                                           mark="purged_at", now=now)
        async with self.transaction():
            cur = await self._exec(
                "UPDATE feedback SET reason=NULL WHERE user_id=? AND reason IS NOT NULL AND decision_id IN"
                " (SELECT d.id FROM decisions d JOIN posts p ON p.id = d.post_id WHERE p.community_id=?)",
                (author_id, community))
            if cur.rowcount:
                self._mark_scrub()
            await self.audit(actor or "member", "forget_me", community=community, detail={"posts_purged": len(ids)},
                             now=now)
        return len(ids)

    async def compact(self) -> None:
        """Make removed text unrecoverable from the database's files. SQLite needs nothing more (secure_delete
        zeroes freed pages, the WAL is checkpointed after each deletion); PostgreSQL rewrites its text tables."""

    async def purge_retention(self, days: int, *, now: datetime | None = None) -> int:
        """Drop the text of posts older than `days`; decisions and daily counts stay. Returns posts purged."""
        cutoff = iso((now or utcnow()) - timedelta(days=days))
        ids = await self._redact_post_rows("created_at < ? AND purged_at IS NULL AND text IS NOT NULL", (cutoff,),
                                           mark="purged_at", now=now)
        await self._write("DELETE FROM cooldowns WHERE at < ?", (cutoff,))
        if ids:
            await self.audit("retention", "purge", community="", detail={"posts_purged": len(ids), "days": days},
                             now=now)
        return len(ids)

    async def daily_counts(self, *, community: str) -> list[dict]:
        """Anonymized decision counts of one community per day, label and action (kept after purges)."""
        return [dict(r) for r in await self._all("SELECT day, label, action, count FROM daily_counts"
                                                 " WHERE community_id=? ORDER BY day, label, action", (community,))]
