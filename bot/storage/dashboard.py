"""Read-only queries behind the dashboard's pages (sandbox feed, judged decisions, channels, audit actions),
each for one community. They live here so that nothing outside bot/storage writes SQL."""
from __future__ import annotations

import json
from typing import Any

from bot.storage.base import StoreBase
from bot.storage.stats import CONFIRMING, REJECTING


class DashboardQueriesMixin(StoreBase):
    """Store methods the dashboard's pages read."""

    async def _dicts(self, sql: str, args: tuple = ()) -> list[dict]:
        return [dict(r) for r in await self._all(sql, args)]

    async def sandbox_feed(self, community: str, *, platform: str = "sandbox", limit: int = 60,
                           post_id: int | None = None) -> list[dict]:
        """One community's sandbox posts (oldest first) with their latest decision, replies, case and withheld reason."""
        where = "p.platform = ? AND p.community_id = ?"
        args: list[Any] = [platform, community]
        if post_id is not None:
            where += " AND p.id = ?"
            args.append(post_id)
        rows = await self._dicts(
            "SELECT p.id, p.message_id, p.channel_id, p.author_id, p.author_name, p.text, p.created_at, p.deleted_at,"
            " d.id AS decision_id, d.action, d.detail, d.note_id, d.labels FROM posts p LEFT JOIN decisions d"
            " ON d.id = (SELECT MAX(id) FROM decisions WHERE post_id = p.id)"
            f" WHERE {where} ORDER BY p.id DESC LIMIT ?", tuple(args) + (limit,))
        rows.reverse()
        ids = [row["id"] for row in rows]
        # Three more queries for the whole page (not three per post): replies, latest case, latest withheld reason.
        replies: dict[int, dict[str, str | None]] = {i: {} for i in ids}
        cases: dict[int, dict] = {}
        withheld: dict[int, str | None] = {}
        if ids:
            marks = ",".join("?" * len(ids))
            for r in await self._all(f"SELECT post_id, kind, message_id FROM replies WHERE post_id IN ({marks})",
                                     tuple(ids)):
                replies[r["post_id"]][r["kind"]] = r["message_id"]
            for r in await self._all(f"SELECT id, post_id, status, resolution FROM cases WHERE post_id IN ({marks})"
                                     " ORDER BY id", tuple(ids)):
                cases[r["post_id"]] = {"id": r["id"], "status": r["status"], "resolution": r["resolution"]}
            for r in await self._all(f"SELECT post_id, detail FROM audit WHERE post_id IN ({marks})"
                                     " AND action='note_withheld' ORDER BY id", tuple(ids)):
                withheld[r["post_id"]] = json.loads(r["detail"]).get("reason")
        for row in rows:
            row["detail"] = json.loads(row["detail"]) if row["detail"] else {}
            labels = json.loads(row["labels"]) if row["labels"] else []
            row["case_like"] = {"label": labels[0] if labels else None, "action": row["action"], "detail": row["detail"],
                                "note_id": row["note_id"]}
            row["replies"] = replies[row["id"]]
            row["case"] = cases.get(row["id"])
            row["withheld"] = withheld.get(row["id"])
        return rows

    async def judged_decisions(self, community: str) -> list[dict]:
        """One community's decisions whose case a moderator closed as right (confirmed) or wrong (dismissed)."""
        rows = await self._dicts(
            "SELECT d.id, d.mode, d.scores, d.labels, c.resolution FROM decisions d JOIN cases c ON c.decision_id = d.id"
            f" WHERE c.community_id = ? AND c.status = 'resolved' AND c.resolution IN"
            f" ({','.join('?' * len(CONFIRMING + REJECTING))})", (community,) + CONFIRMING + REJECTING)
        for r in rows:
            r["scores"] = json.loads(r["scores"])
            r["labels"] = json.loads(r["labels"])
            r["confirmed"] = r["resolution"] in CONFIRMING
        return rows

    async def decision_scores(self, community: str, *, limit: int = 20000) -> list[dict]:
        """One community's most recent decisions' mode and scores, for counting what a threshold would produce."""
        rows = await self._dicts("SELECT d.mode, d.scores FROM decisions d JOIN posts p ON p.id = d.post_id"
                                 " WHERE p.community_id = ? ORDER BY d.id DESC LIMIT ?", (community, limit))
        for r in rows:
            r["scores"] = json.loads(r["scores"])
        return rows

    async def case_channels(self, community: str) -> list[dict]:
        """One community's channels that have cases, for the queue filter."""
        return await self._dicts(
            "SELECT c.channel_id, MAX(p.channel_name) AS name, COUNT(*) AS n FROM cases c JOIN posts p ON p.id = c.post_id"
            " WHERE c.community_id = ? GROUP BY c.channel_id ORDER BY n DESC", (community,))

    async def audit_actions(self, community: str) -> list[str]:
        """Distinct audit actions of one community, for the audit filters."""
        return [r["action"] for r in await self._dicts("SELECT DISTINCT action FROM audit WHERE community_id = ?"
                                                       " ORDER BY action", (community,))]
