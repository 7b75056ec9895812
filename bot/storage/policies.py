"""The published policies and the one in force, shared by every process on the database."""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime

from bot.storage.base import StoreBase
from bot.storage.clock import iso


class PolicyMixin(StoreBase):
    """Store methods for publishing a policy and finding the active one."""

    async def publish_policy(self, version: str, files: dict[str, str], *, actor: str,
                             now: datetime | None = None) -> int:
        """Make `version` (with its files) the policy in force for every process; returns the event id.

        Other processes learn of it by polling `active_policy()` (SQLite) or at once by notification (PostgreSQL).
        """
        async with self.transaction():
            await self._exec("INSERT OR IGNORE INTO policy_versions (version, files, created_at, created_by)"
                             " VALUES (?,?,?,?)", (version, json.dumps(files, sort_keys=True), iso(now), actor))
            cur = await self._exec("INSERT INTO policy_events (at, actor, version) VALUES (?,?,?)",
                                   (iso(now), actor, version))
            await self._notify_policy(version)
        return cur.new_id

    async def active_policy(self) -> dict | None:
        """The newest publication: {id, at, actor, version}, or None before the first."""
        row = await self._one("SELECT id, at, actor, version FROM policy_events ORDER BY id DESC LIMIT 1")
        return dict(row) if row else None

    async def policy_files(self, version: str) -> dict[str, str] | None:
        """The files of a published policy version."""
        row = await self._one("SELECT files FROM policy_versions WHERE version=?", (version,))
        return json.loads(row["files"]) if row else None

    async def _notify_policy(self, version: str) -> None:
        """Tell listening processes at commit (PostgreSQL); SQLite's followers poll instead."""

    async def listen_policy(self, callback: Callable[[], object]) -> Callable[[], Awaitable[None]] | None:
        """Call `callback()` whenever a policy is published; returns an async `stop()`, or None when this backend
        cannot notify (SQLite: poll `active_policy()`)."""
        return None
