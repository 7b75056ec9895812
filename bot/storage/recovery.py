"""Live processes and the work a dead one left: replies reserved but never posted, cases whose card never went
out. A bot process heartbeats; another process serving the same servers takes over a dead one's posts."""
from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from bot.storage.base import StoreBase
from bot.storage.clock import iso


class RecoveryMixin(StoreBase):
    """Store methods for heartbeats and taking over unfinished work."""

    async def heartbeat(self, instance: str, *, now: datetime | None = None) -> None:
        """This process is alive (call every few seconds)."""
        at = iso(now)
        await self._write("INSERT INTO instances (id, started_at, heartbeat_at) VALUES (?,?,?)"
                          " ON CONFLICT (id) DO UPDATE SET heartbeat_at=excluded.heartbeat_at", (instance, at, at))

    async def retire_instance(self, instance: str) -> None:
        """This process stops: its unfinished posts may be taken over at once."""
        await self._write("UPDATE instances SET heartbeat_at='' WHERE id=?", (instance,))

    async def set_handler(self, post_id: int, instance: str) -> None:
        """`instance` acts on this post now (call inside the post's transaction)."""
        await self._write("UPDATE posts SET handled_by=? WHERE id=?", (instance, post_id))

    async def release_post(self, post_id: int, instance: str) -> None:
        """`instance` is done with this post (posted, or gave up with the reason recorded): nobody takes it over."""
        await self._write("UPDATE posts SET handled_by=NULL WHERE id=? AND handled_by=?", (post_id, instance))

    async def orphaned_posts(self, *, me: str, dead_before: datetime, communities: Collection[str] | None = None,
                             limit: int = 20) -> list[dict]:
        """Posts of processes that died (no heartbeat since `dead_before`) with a reply reserved and never posted,
        or an open case whose card never went out; each with `replies` (the pending kinds) and `case_id`.

        A reservation with a platform action still pending (a note a moderator sent, a card refresh) is the
        outbox's to carry out, not a takeover's. Processes release each post once done with it, so only the posts
        a process was in the middle of are looked at (through the index on posts.handled_by)."""
        where = ("i.id != ? AND i.heartbeat_at < ? AND p.deleted_at IS NULL AND p.purged_at IS NULL"
                 " AND NOT EXISTS (SELECT 1 FROM platform_actions a WHERE a.post_id = p.id AND a.done_at IS NULL)"
                 " AND (EXISTS (SELECT 1 FROM replies r WHERE r.post_id = p.id AND r.message_id IS NULL)"
                 "      OR EXISTS (SELECT 1 FROM cases c WHERE c.post_id = p.id AND c.kind = 'flag'"
                 "                 AND c.status != 'resolved' AND c.card_message_id IS NULL))")
        args: tuple = (me, iso(dead_before))
        if communities is not None:
            if not communities:
                return []
            where += f" AND p.community_id IN ({','.join('?' * len(communities))})"
            args += tuple(communities)
        rows = [dict(r) for r in await self._all(
            "SELECT p.id AS post_id, p.community_id, p.channel_id, p.message_id, p.author_id, p.handled_by"
            " FROM instances i JOIN posts p ON p.handled_by = i.id"
            f" WHERE {where} ORDER BY p.id LIMIT ?", args + (limit,))]
        for row in rows:
            row["replies"] = [r["kind"] for r in await self._all(
                "SELECT kind FROM replies WHERE post_id=? AND message_id IS NULL ORDER BY kind", (row["post_id"],))]
            case = await self._one("SELECT id, card_message_id FROM cases WHERE post_id=? AND kind='flag'"
                                   " AND status != 'resolved' ORDER BY id DESC LIMIT 1", (row["post_id"],))
            row["case_id"] = case["id"] if case else None
            row["card_missing"] = case is not None and case["card_message_id"] is None
        return rows

    async def forget_dead_instances(self, *, dead_before: datetime) -> int:
        """Drop the records of processes silent since `dead_before` that hold no post any more."""
        cur = await self._write("DELETE FROM instances WHERE heartbeat_at < ? AND NOT EXISTS"
                                " (SELECT 1 FROM posts p WHERE p.handled_by = instances.id)", (iso(dead_before),))
        return cur.rowcount

    async def take_over(self, post_id: int, *, dead: str, me: str) -> bool:
        """Move a dead process's post to this one; False when another process took it first."""
        cur = await self._write("UPDATE posts SET handled_by=? WHERE id=? AND handled_by=?", (me, post_id, dead))
        return cur.rowcount == 1
