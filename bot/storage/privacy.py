"""Deleting posts, forgetting members and the retention purge: text goes, anonymized counts stay."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

from bot.storage.clock import iso, utcnow

REDACTED = "[removed]"


class PrivacyMixin:
    """Store methods that remove members' text everywhere it is kept."""

    async def _redact_post_rows(self, where: str, args: tuple, *, mark: str, now: datetime | None) -> list[int]:
        """Blank the text of matching posts and every copy of it in their decisions and feedback."""
        async with self.transaction():
            ids = await self._redact_in_tx(where, args, mark=mark, now=now)
        if ids:
            # Old page versions in the write-ahead log still hold the text until a checkpoint.
            await self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return ids

    async def _redact_in_tx(self, where: str, args: tuple, *, mark: str, now: datetime | None) -> list[int]:
        rows = await self._all(f"SELECT id FROM posts WHERE {where}", args)
        ids = [r["id"] for r in rows]
        at = iso(now)
        for post_id in ids:
            await self.conn.execute(
                f"UPDATE posts SET text=NULL, author_name=NULL, url=NULL, {mark}=COALESCE({mark}, ?) WHERE id=?",
                (at, post_id))
            for drow in await self._all("SELECT id, detail FROM decisions WHERE post_id=?", (post_id,)):
                detail = json.loads(drow["detail"])
                for rule in detail.get("rules", []):
                    rule["spans"] = [[s, e, None] for s, e, _ in rule.get("spans", [])]
                detail["why"] = REDACTED
                await self.conn.execute("UPDATE decisions SET detail=? WHERE id=?", (json.dumps(detail), drow["id"]))
            await self.conn.execute(
                "UPDATE feedback SET reason=NULL WHERE decision_id IN (SELECT id FROM decisions WHERE post_id=?)", (post_id,))
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
            community = (await self._one("SELECT community_id FROM posts WHERE id=?", (post_id,)))["community_id"]
            open_cases = await self._all("SELECT id FROM cases WHERE post_id=? AND status != 'resolved'", (post_id,))
            await self.conn.execute(
                "UPDATE cases SET status='resolved', resolution='deleted', resolved_by=?, resolved_at=?, updated_at=?"
                " WHERE post_id=? AND status != 'resolved'", (actor, at, at, post_id))
            await self.audit(actor, "post_deleted", community=community, post_id=post_id,
                             detail={"closed_cases": [r["id"] for r in open_cases]}, now=now)
        await self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return post_id

    async def forget_user(self, author_id: str, *, community: str, actor: str | None = None,
                          now: datetime | None = None) -> int:
        """Remove a member's text from one community (posts, decisions, their feedback reasons); returns posts purged."""
        async with self.transaction():
            ids = await self._redact_in_tx("author_id=? AND community_id=?", (author_id, community),
                                           mark="purged_at", now=now)
            await self.conn.execute(
                "UPDATE feedback SET reason=NULL WHERE user_id=? AND decision_id IN (SELECT d.id FROM decisions d"
                " JOIN posts p ON p.id = d.post_id WHERE p.community_id=?)", (author_id, community))
            await self.audit(actor or "member", "forget_me", community=community, detail={"posts_purged": len(ids)},
                             now=now)
        await self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return len(ids)

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
