"""What the database says happened, read only through `Store` methods (so the same reads work on every backend):
the multi-process tests check the bots' work here and in the fake Discord's request log, never with their own SQL."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from bot.storage import Store


@dataclass
class PostRecord:
    """One member's post as stored: its decisions (from the audit log, written in the same transaction as each
    decision), its reply reservations {kind: platform message id or None} and its cases."""

    message_id: str
    post_id: int | None = None
    community: str | None = None
    decisions: list[int] = field(default_factory=list)
    replies: dict[str, str | None] = field(default_factory=dict)


class Ledger:
    """A read-only look at the database the bots share (`async with Ledger(database) as ledger`)."""

    def __init__(self, database):
        self.database = database
        self.store: Store | None = None

    async def __aenter__(self) -> "Ledger":
        self.store = await Store.open(self.database)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.store.close()

    async def events(self, community: str, action: str) -> list[dict]:
        """Every audit event of one action in one community, oldest first."""
        rows, page = [], 500
        while True:
            batch = await self.store.audit_log(community=community, action=action, limit=page, offset=len(rows))
            rows.extend(batch)
            if len(batch) < page:
                return rows[::-1]

    async def posts(self, message_ids: list[str], communities: list[str]) -> dict[str, PostRecord]:
        """The record of each message id (a post never stored has post_id None and no decisions)."""
        records = {mid: PostRecord(mid) for mid in message_ids}
        by_post: dict[int, PostRecord] = {}
        for mid, record in records.items():
            row = await self.store.post_by_message("discord", mid)
            if row is not None:
                record.post_id, record.community = row["id"], row["community_id"]
                record.replies = await self.store.replies(row["id"])
                by_post[row["id"]] = record
        for community in communities:
            for event in await self.events(community, "decision"):
                if event["post_id"] in by_post:
                    by_post[event["post_id"]].decisions.append(event["decision_id"])
        return records

    async def undecided(self, message_ids: list[str]) -> list[str]:
        """The message ids with no stored decision yet."""
        out = []
        for mid in message_ids:
            row = await self.store.post_by_message("discord", mid)
            if row is None or await self.store.latest_decision(row["id"]) is None:
                out.append(mid)
        return out

    async def wait_until(self, predicate, *, timeout: float = 30, every: float = 0.2):
        """Poll `await predicate(self)` until it returns something truthy; returns that (TimeoutError otherwise)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = await predicate(self)
            if result:
                return result
            if loop.time() > deadline:
                raise TimeoutError(f"the database did not reach the expected state in {timeout:g} s")
            await asyncio.sleep(every)
