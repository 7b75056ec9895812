"""The contract between the storage backends and the store's aggregates.

`Store` (SQLite) and `PostgresStore` implement these primitives; the aggregates (posts and decisions in
`store.py`, cases and audit, replies and cooldowns, outbox and sessions, privacy, stats, dashboard reads, policies)
are mixins written once against them, in the SQL both databases accept. Nothing outside `bot/storage` writes SQL.
Rows are read-only mappings of column name to value (`Row`); a write returns a `Result`. What the rest of Caveat
may call on a store, and the typed rows it gets back, are in `contract.py` and `rows.py`.
"""
from __future__ import annotations

import asyncio
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: One row of a query: column name -> value (aiosqlite.Row and asyncpg.Record both are).
Row = Mapping[str, Any]


@dataclass(frozen=True)
class Result:
    """What a write statement did: rows changed, and the id of the row it inserted (None if none)."""
    rowcount: int
    lastrowid: int | None

    @property
    def new_id(self) -> int:
        """The id of the row an INSERT added (an error when it added none)."""
        if self.lastrowid is None:
            raise LookupError("the statement inserted no row")
        return self.lastrowid


class StoreBase:
    """The primitives every backend provides; the aggregate mixins use only these."""

    dialect: str
    conn: Any  # SQLite only: the one aiosqlite connection
    _lock: asyncio.Lock  # SQLite only: one transaction at a time on that connection

    def transaction(self, *, community: str | None = None) -> AbstractAsyncContextManager[Any]:
        """One atomic unit of work; nested use by the same task joins the outer one. `community`: every write in it
        belongs to that community (PostgreSQL then lets other communities' transactions run at the same time)."""
        raise NotImplementedError

    def _in_transaction(self) -> bool:
        raise NotImplementedError

    async def _one(self, sql: str, args: tuple = ()) -> Row | None:
        raise NotImplementedError

    async def _all(self, sql: str, args: tuple = ()) -> list[Row]:
        raise NotImplementedError

    async def _exec(self, sql: str, args: tuple = ()) -> Result:
        raise NotImplementedError

    async def _write(self, sql: str, args: tuple = ()) -> Result:
        """Run one statement inside a transaction (the caller's, or its own)."""
        async with self.transaction():
            return await self._exec(sql, args)

    async def _count(self, sql: str, args: tuple = ()) -> int:
        """The `n` column of a one-row COUNT query."""
        row = await self._one(sql, args)
        return int(row["n"]) if row else 0

    def _mark_scrub(self) -> None:
        """The current transaction removed members' text: scrub old copies after its commit."""
        raise NotImplementedError

    async def count_cases(self, *, community: str, status: str = "open", include_replayed: bool = False) -> int:
        raise NotImplementedError

    async def replies(self, post_id: int) -> dict[str, str | None]:
        raise NotImplementedError

    async def audit(self, actor: str, action: str, *, community: str, case_id: int | None = None,
                    post_id: int | None = None, decision_id: int | None = None, detail: dict | None = None,
                    now: datetime | None = None) -> int:
        raise NotImplementedError
