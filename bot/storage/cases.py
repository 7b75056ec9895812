"""Cases and the audit log, always read and written for one community; claim locks held by transactions."""
from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime
from typing import Any, cast

from bot.storage.base import StoreBase
from bot.storage.clock import iso
from bot.storage.rows import AuditRow, CaseRow

RESOLUTIONS = ("sent_note", "dismissed", "removed", "escalated", "deleted", "expired", "cleared")
KINDS = ("flag", "dispute", "shadow", "replay")
_CASE_SELECT = (
    "SELECT c.*, p.text, p.author_id, p.author_name, p.url, p.platform, p.message_id, p.channel_name,"
    " p.created_at AS posted_at, p.deleted_at, d.detail, d.scores, d.labels, d.note_id, d.model_version,"
    " d.policy_version, d.mode, d.shadow FROM cases c JOIN posts p ON p.id = c.post_id"
    " JOIN decisions d ON d.id = c.decision_id")


class CaseNotFound(LookupError):
    """No case with that id in this community."""


class CaseConflict(RuntimeError):
    """A case action refused: claimed by someone else, or already resolved."""

    def __init__(self, message: str, holder: str | None = None):
        super().__init__(message)
        self.holder = holder


def check_actionable(case: CaseRow, moderator: str) -> None:
    """May `moderator` act on this case? CaseConflict when it is resolved, or claimed by someone else."""
    if case["status"] == "resolved":
        raise CaseConflict(f"case #{case['id']} is already resolved ({case['resolution']})", case["resolved_by"])
    if case["status"] == "claimed" and case["claimed_by"] != moderator:
        raise CaseConflict(f"case #{case['id']} is claimed by {case['claimed_by']}", case["claimed_by"])


class CasesMixin(StoreBase):
    """Store methods for cases and the audit log."""

    async def open_case(self, post_id: int, decision_id: int, decision, *, channel_id: str, community_id: str,
                        kind: str = "flag", now: datetime | None = None) -> int:
        """Open a case for a post, or point its unresolved case of that kind at the newer decision."""
        if kind not in KINDS:
            raise ValueError(f"unknown case kind '{kind}' (one of: {', '.join(KINDS)})")
        at = iso(now)
        label = decision.labels[0] if decision.labels else None
        async with self.transaction():
            row = await self._one("SELECT id FROM cases WHERE post_id=? AND kind=? AND status != 'resolved'",
                                  (post_id, kind))
            if row:
                await self._exec(
                    "UPDATE cases SET decision_id=?, label=?, action=?, priority=?, updated_at=? WHERE id=?",
                    (decision_id, label, decision.action, decision.severity, at, row["id"]))
                return row["id"]
            cur = await self._exec(
                "INSERT INTO cases (post_id, decision_id, community_id, channel_id, label, action, priority, kind,"
                " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (post_id, decision_id, community_id, channel_id, label, decision.action, decision.severity, kind,
                 at, at))
            return cur.new_id

    async def has_open_case(self, post_id: int) -> bool:
        """Does this post have an unresolved case?"""
        return await self._one("SELECT 1 FROM cases WHERE post_id=? AND status != 'resolved'", (post_id,)) is not None

    async def case(self, case_id: int, *, community: str) -> CaseRow:
        """A case of `community` joined with its post and decision; CaseNotFound for any other community's."""
        row = await self._one(_CASE_SELECT + " WHERE c.id=? AND c.community_id=?", (case_id, community))
        if row is None:
            raise CaseNotFound(f"no case #{case_id}")
        return _case_row(row)

    async def cases(self, *, community: str, status: str | None = "open", label: str | None = None,
                    channel_id: str | None = None, kind: str | None = None, sort: str = "severity",
                    limit: int = 50, offset: int = 0, author_id: str | None = None, post_id: int | None = None,
                    include_replayed: bool = False) -> list[CaseRow]:
        """Cases of one community by status ('open' = open or claimed), label, channel, kind; replayed ones hidden
        unless asked for (or `kind='replay'`)."""
        where: list[str] = ["c.community_id = ?"]
        args: list[Any] = [community]
        if status == "open":
            where.append("c.status != 'resolved'")
        elif status:
            where.append("c.status = ?")
            args.append(status)
        for col, val in (("c.label", label), ("c.channel_id", channel_id), ("c.kind", kind),
                         ("p.author_id", author_id), ("c.post_id", post_id)):
            if val:
                where.append(f"{col} = ?")
                args.append(val)
        if not include_replayed and kind != "replay":
            where.append("c.kind != 'replay'")
        order = {"severity": "c.priority DESC, c.created_at ASC", "oldest": "c.created_at ASC, c.id ASC",
                 "newest": "c.created_at DESC, c.id DESC"}.get(sort)
        if order is None:
            raise ValueError(f"unknown sort '{sort}' (severity, oldest, newest)")
        sql = _CASE_SELECT + " WHERE " + " AND ".join(where) + f" ORDER BY {order} LIMIT ? OFFSET ?"
        return [_case_row(r) for r in await self._all(sql, tuple(args) + (limit, offset))]

    async def count_cases(self, *, community: str, status: str = "open", include_replayed: bool = False) -> int:
        """How many cases of one community are open (open or claimed) or in the given status."""
        where = "community_id = ?" + ("" if include_replayed else " AND kind != 'replay'")
        if status == "open":
            return await self._count(f"SELECT COUNT(*) AS n FROM cases WHERE {where} AND status != 'resolved'",
                                     (community,))
        return await self._count(f"SELECT COUNT(*) AS n FROM cases WHERE {where} AND status = ?", (community, status))

    async def claim(self, case_id: int, moderator: str, *, community: str, now: datetime | None = None) -> CaseRow:
        """Lock a case to `moderator`; refused (CaseConflict) if another moderator holds it or it is resolved."""
        async with self.transaction():
            case = await self.case(case_id, community=community)
            check_actionable(case, moderator)
            if case["status"] != "claimed":
                await self._exec("UPDATE cases SET status='claimed', claimed_by=?, claimed_at=?, updated_at=?"
                                        " WHERE id=?", (moderator, iso(now), iso(now), case_id))
                await self.audit(moderator, "claim", community=community, case_id=case_id, post_id=case["post_id"],
                                 now=now)
            return await self.case(case_id, community=community)

    async def unclaim(self, case_id: int, moderator: str, *, community: str,
                      now: datetime | None = None) -> CaseRow:
        """Give a claimed case back to the queue; only its holder may."""
        async with self.transaction():
            case = await self.case(case_id, community=community)
            check_actionable(case, moderator)
            if case["status"] != "claimed":
                raise CaseConflict(f"case #{case_id} is not claimed")
            await self._exec("UPDATE cases SET status='open', claimed_by=NULL, claimed_at=NULL, updated_at=?"
                                    " WHERE id=?", (iso(now), case_id))
            await self.audit(moderator, "unclaim", community=community, case_id=case_id, post_id=case["post_id"],
                             now=now)
            return await self.case(case_id, community=community)

    async def resolve(self, case_id: int, moderator: str, resolution: str, *, community: str,
                      reason_code: str | None = None, now: datetime | None = None) -> CaseRow:
        """Close a case with an outcome; an open case is claimed on the way, another's claim is refused."""
        if resolution not in RESOLUTIONS:
            raise ValueError(f"unknown resolution '{resolution}' (one of: {', '.join(RESOLUTIONS)})")
        at = iso(now)
        async with self.transaction():
            case = await self.case(case_id, community=community)
            check_actionable(case, moderator)
            await self._exec(
                "UPDATE cases SET status='resolved', claimed_by=COALESCE(claimed_by, ?), resolved_by=?,"
                " resolved_at=?, resolution=?, reason_code=?, updated_at=? WHERE id=?",
                (moderator, moderator, at, resolution, reason_code, at, case_id))
            await self.audit(moderator, resolution, community=community, case_id=case_id, post_id=case["post_id"],
                             detail={"reason_code": reason_code}, now=now)
            return await self.case(case_id, community=community)

    async def clear_replayed(self, moderator: str, *, community: str, now: datetime | None = None) -> int:
        """Close every open replayed (shadow history) case of a community at once; returns how many."""
        at = iso(now)
        async with self.transaction():
            cur = await self._exec(
                "UPDATE cases SET status='resolved', resolution='cleared', resolved_by=?, resolved_at=?, updated_at=?"
                " WHERE community_id=? AND kind='replay' AND status != 'resolved'", (moderator, at, at, community))
            await self.audit(moderator, "replayed_cleared", community=community, detail={"cases": cur.rowcount}, now=now)
        return cur.rowcount

    async def set_case_card(self, case_id: int, message_id: str) -> None:
        """Remember the moderators' channel message that shows this case."""
        await self._write("UPDATE cases SET card_message_id=? WHERE id=?", (message_id, case_id))

    async def unattended_emergencies(self, *, older_than: datetime, communities: Collection[str] | None = None,
                                     limit: int = 50) -> list[dict]:
        """Open, unclaimed emergency cases last alerted before `older_than`: to re-alert. Every community's, or
        only those of `communities` (a bot process re-alerts only for the servers on its own shards)."""
        where = ("status='open' AND action='escalate' AND kind='flag' AND COALESCE(realerted_at, created_at) < ?")
        args: tuple = (iso(older_than),)
        if communities is not None:
            if not communities:
                return []
            where += f" AND community_id IN ({','.join('?' * len(communities))})"
            args += tuple(communities)
        rows = await self._all("SELECT id, community_id, post_id, created_at, realerted_at FROM cases"
                               f" WHERE {where} ORDER BY id LIMIT ?", args + (limit,))
        return [dict(r) for r in rows]

    async def mark_realerted(self, case_id: int, *, now: datetime | None = None) -> bool:
        """Record a re-alert; False if the case was claimed or closed meanwhile."""
        cur = await self._write("UPDATE cases SET realerted_at=? WHERE id=? AND status='open'", (iso(now), case_id))
        return cur.rowcount == 1

    # -- audit ---------------------------------------------------------------------------------
    async def audit(self, actor: str, action: str, *, community: str, case_id: int | None = None,
                    post_id: int | None = None, decision_id: int | None = None, detail: dict | None = None,
                    now: datetime | None = None) -> int:
        """Append one event to the audit log of a community (ids and codes only, never message text)."""
        cur = await self._write(
            "INSERT INTO audit (at, actor, action, community_id, case_id, post_id, decision_id, detail)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (iso(now), actor, action, community, case_id, post_id, decision_id, json.dumps(detail or {})))
        return cur.new_id

    async def audit_log(self, *, community: str, actor: str | None = None, action: str | None = None,
                        case_id: int | None = None, post_id: int | None = None, limit: int = 200,
                        offset: int = 0) -> list[AuditRow]:
        """Audit events of one community, newest first, optionally filtered."""
        where: list[str] = ["community_id = ?"]
        args: list[Any] = [community]
        for col, val in (("actor", actor), ("action", action), ("case_id", case_id), ("post_id", post_id)):
            if val is not None and val != "":
                where.append(f"{col} = ?")
                args.append(val)
        sql = "SELECT * FROM audit WHERE " + " AND ".join(where) + " ORDER BY id DESC LIMIT ? OFFSET ?"
        return [cast(AuditRow, dict(r) | {"detail": json.loads(r["detail"])})
                for r in await self._all(sql, tuple(args) + (limit, offset))]


def _case_row(row) -> CaseRow:
    d = dict(row)
    for key in ("detail", "scores", "labels"):
        if key in d and isinstance(d[key], str):
            d[key] = json.loads(d[key])
    return cast(CaseRow, d)
