"""The outbox of platform actions, and the dashboard's server-side sessions and one-time login links."""
from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import cast

from bot.storage.base import StoreBase
from bot.storage.clock import iso, utcnow
from bot.storage.rows import ActionRow, PendingActionRow


def sha256(text: str) -> str:
    """Hex SHA-256 of a secret (only hashes of tokens and session ids are stored)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class OutboxMixin(StoreBase):
    """Actions decided in one place (the dashboard) that the adapter owning the post carries out."""

    async def enqueue_action(self, community: str, platform: str, kind: str, *, actor: str,
                             case_id: int | None = None, post_id: int | None = None, detail: dict | None = None,
                             now: datetime | None = None) -> int:
        """Add one action for `platform` to carry out (inside the caller's transaction when there is one)."""
        cur = await self._write(
            "INSERT INTO platform_actions (community_id, platform, kind, case_id, post_id, actor, detail, created_at)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (community, platform, kind, case_id, post_id, actor, json.dumps(detail or {}), iso(now)))
        return cur.new_id

    async def take_actions(self, platform: str, *, communities: Collection[str] | None = None, limit: int = 20,
                           retry_after_seconds: float = 120, now: datetime | None = None) -> list[ActionRow]:
        """Pending actions for `platform`, marked as taken in one transaction (a crashed taker's rows come back
        after `retry_after_seconds`). With `communities`, only theirs: a bot process takes only the actions of the
        servers on its own shards."""
        now = now or utcnow()
        stale = iso(now - timedelta(seconds=retry_after_seconds))
        where = "platform=? AND done_at IS NULL AND (taken_at IS NULL OR taken_at < ?)"
        args: tuple = (platform, stale)
        if communities is not None:
            if not communities:
                return []
            where += f" AND community_id IN ({','.join('?' * len(communities))})"
            args += tuple(communities)
        # Polled every few seconds: a plain read first, so an empty outbox never takes the write lock.
        if await self._one(f"SELECT 1 FROM platform_actions WHERE {where} LIMIT 1", args) is None:
            return []
        async with self.transaction():
            rows = await self._all(f"SELECT * FROM platform_actions WHERE {where} ORDER BY id LIMIT ?",
                                   args + (limit,))
            for r in rows:
                await self._exec("UPDATE platform_actions SET taken_at=? WHERE id=?", (iso(now), r["id"]))
        return [cast(ActionRow, dict(r) | {"detail": json.loads(r["detail"])}) for r in rows]

    async def finish_action(self, action_id: int, result: str, *, now: datetime | None = None) -> None:
        """Mark an action carried out (or failed for good) with a short result code."""
        await self._write("UPDATE platform_actions SET done_at=?, result=? WHERE id=?", (iso(now), result, action_id))

    async def pending_actions(self, *, community: str, case_id: int | None = None) -> list[PendingActionRow]:
        """Actions of a community not carried out yet (shown on the dashboard's case page)."""
        sql = "SELECT * FROM platform_actions WHERE community_id=? AND done_at IS NULL"
        args: tuple = (community,)
        if case_id is not None:
            sql += " AND case_id=?"
            args += (case_id,)
        return [cast(PendingActionRow, dict(r)) for r in await self._all(sql + " ORDER BY id", args)]


class SessionsMixin(StoreBase):
    """One-time login links and dashboard sessions, each bound to one moderator and one community."""

    async def create_login_link(self, community: str, moderator_id: str, moderator: str, *, minutes: float = 15,
                                now: datetime | None = None) -> str:
        """A fresh one-time login token for this moderator (returned once; only its hash is stored)."""
        token = secrets.token_urlsafe(32)
        now = now or utcnow()
        await self._write("INSERT INTO login_links (token_sha256, moderator_id, moderator, community_id, created_at,"
                          " expires_at) VALUES (?,?,?,?,?,?)",
                          (sha256(token), moderator_id, moderator, community, iso(now),
                           iso(now + timedelta(minutes=minutes))))
        return token

    async def use_login_link(self, token: str, *, now: datetime | None = None) -> dict | None:
        """Spend a login link: its moderator and community, or None when unknown, used or expired."""
        async with self.transaction():
            row = await self._one("SELECT * FROM login_links WHERE token_sha256=?", (sha256(token),))
            if row is None or row["used_at"] or row["expires_at"] < iso(now):
                return None
            await self._exec("UPDATE login_links SET used_at=? WHERE token_sha256=?", (iso(now), sha256(token)))
        return dict(row)

    async def create_web_session(self, *, moderator_id: str, moderator: str, community: str, role: str,
                                 hours: float = 12, now: datetime | None = None) -> tuple[str, str]:
        """A new dashboard session; returns (session id for the cookie, CSRF token)."""
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        now = now or utcnow()
        await self._write("INSERT INTO web_sessions (id_sha256, moderator_id, moderator, community_id, role, csrf,"
                          " created_at, expires_at) VALUES (?,?,?,?,?,?,?,?)",
                          (sha256(sid), moderator_id, moderator, community, role, csrf, iso(now),
                           iso(now + timedelta(hours=hours))))
        return sid, csrf

    async def web_session(self, sid: str, *, now: datetime | None = None) -> dict | None:
        """The live session with this id, or None when unknown, expired or revoked."""
        row = await self._one("SELECT * FROM web_sessions WHERE id_sha256=? AND revoked_at IS NULL AND expires_at > ?",
                              (sha256(sid), iso(now)))
        return dict(row) if row else None

    async def set_session_community(self, sid: str, community: str) -> None:
        """An operator's session switches to another community."""
        await self._write("UPDATE web_sessions SET community_id=? WHERE id_sha256=? AND role='operator'",
                          (community, sha256(sid)))

    async def revoke_web_session(self, sid: str, *, now: datetime | None = None) -> None:
        """End one session now (logout)."""
        await self._write("UPDATE web_sessions SET revoked_at=? WHERE id_sha256=? AND revoked_at IS NULL",
                          (iso(now), sha256(sid)))

    async def revoke_moderator_sessions(self, community: str, moderator_id: str, *,
                                        now: datetime | None = None) -> int:
        """End every dashboard session and unused link of one moderator in one community; returns sessions ended."""
        async with self.transaction():
            cur = await self._exec("UPDATE web_sessions SET revoked_at=? WHERE community_id=? AND moderator_id=?"
                                          " AND revoked_at IS NULL", (iso(now), community, moderator_id))
            await self._exec("UPDATE login_links SET used_at=? WHERE community_id=? AND moderator_id=?"
                                    " AND used_at IS NULL", (iso(now), community, moderator_id))
        return cur.rowcount

    async def revoke_operator_sessions(self, *, now: datetime | None = None) -> int:
        """End every operator session (the shared token was renewed)."""
        cur = await self._write("UPDATE web_sessions SET revoked_at=? WHERE role='operator' AND revoked_at IS NULL",
                                (iso(now),))
        return cur.rowcount
