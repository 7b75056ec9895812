"""Read-only queries the dashboard needs beyond the Store API (sandbox feed, judged decisions, channels).

They read the same tables as `Store`; writes always go through `Store` and `Pipeline`.
"""
from __future__ import annotations

import json

from bot.storage import Store
from bot.storage.stats import CONFIRMING, REJECTING

SANDBOX = "sandbox"


async def _all(store: Store, sql: str, args: tuple = ()) -> list[dict]:
    async with store.conn.execute(sql, args) as cur:
        return [dict(r) for r in await cur.fetchall()]


async def sandbox_feed(store: Store, *, limit: int = 60, post_id: int | None = None) -> list[dict]:
    """Sandbox posts (oldest first) with their latest decision, replies, open case and withheld-note reason."""
    where, args = "p.platform = ?", [SANDBOX]
    if post_id is not None:
        where += " AND p.id = ?"
        args.append(post_id)
    rows = await _all(store,
        "SELECT p.id, p.message_id, p.channel_id, p.author_id, p.author_name, p.text, p.created_at, p.deleted_at,"
        " d.id AS decision_id, d.action, d.detail, d.note_id FROM posts p LEFT JOIN decisions d"
        " ON d.id = (SELECT MAX(id) FROM decisions WHERE post_id = p.id)"
        f" WHERE {where} ORDER BY p.id DESC LIMIT ?", tuple(args) + (limit,))
    rows.reverse()
    for row in rows:
        row["detail"] = json.loads(row["detail"]) if row["detail"] else {}
        row["replies"] = await store.replies(row["id"])
        cases = await _all(store, "SELECT id, status, resolution FROM cases WHERE post_id=? ORDER BY id DESC LIMIT 1",
                           (row["id"],))
        row["case"] = cases[0] if cases else None
        held = await _all(store, "SELECT detail FROM audit WHERE post_id=? AND action='note_withheld'"
                                 " ORDER BY id DESC LIMIT 1", (row["id"],))
        row["withheld"] = json.loads(held[0]["detail"]).get("reason") if held else None
    return rows


async def judged_decisions(store: Store) -> list[dict]:
    """Decisions whose case a moderator closed as right (confirmed) or wrong (dismissed)."""
    rows = await _all(store,
        "SELECT d.id, d.mode, d.scores, d.labels, c.resolution FROM decisions d JOIN cases c ON c.decision_id = d.id"
        f" WHERE c.status = 'resolved' AND c.resolution IN ({','.join('?' * len(CONFIRMING + REJECTING))})",
        CONFIRMING + REJECTING)
    for r in rows:
        r["scores"] = json.loads(r["scores"])
        r["labels"] = json.loads(r["labels"])
        r["confirmed"] = r["resolution"] in CONFIRMING
    return rows


async def decision_scores(store: Store, *, limit: int = 20000) -> list[dict]:
    """The most recent decisions' mode and scores, for counting what a threshold would produce."""
    rows = await _all(store, "SELECT mode, scores FROM decisions ORDER BY id DESC LIMIT ?", (limit,))
    for r in rows:
        r["scores"] = json.loads(r["scores"])
    return rows


async def case_channels(store: Store) -> list[dict]:
    """Channels that have cases, for the queue filter."""
    return await _all(store,
        "SELECT c.channel_id, MAX(p.channel_name) AS name, COUNT(*) AS n FROM cases c JOIN posts p ON p.id = c.post_id"
        " GROUP BY c.channel_id ORDER BY n DESC")


async def audit_actions(store: Store) -> list[str]:
    """Distinct audit actions and actors, for the audit filters."""
    return [r["action"] for r in await _all(store, "SELECT DISTINCT action FROM audit ORDER BY action")]
