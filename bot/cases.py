"""The moderators' side: every case action (claim, unclaim, send note, dismiss, remove, escalate), members'
feedback and disputes, for Discord and the dashboard alike. Adapters call these and render the result.

Each action runs in one transaction and returns a `CaseResult`. What must happen on the platform that owns
the post (post the note, delete the post, update the card, alert on-call) is written to the outbox in the same
transaction; that platform's adapter carries it out (at once when the click came from it, else by polling).
There is ONE note chooser: `proposed_note`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from bot.engine.actions import SEVERITY
from bot.storage import CaseConflict, CaseNotFound
from bot.storage.cases import check_actionable
from bot.storage.contract import Storage
from bot.storage.rows import CaseRow
from policies.loader import PolicySet
from policies.schema import Note

__all__ = ["CaseConflict", "CaseNotFound", "CaseResult", "CaseService", "NotAllowed", "proposed_note"]

# Platforms where Caveat can act itself; replayed history ('replay') has nothing to act on.
ACTIONABLE_PLATFORMS = ("discord", "sandbox")


class NotAllowed(PermissionError):
    """The person may not do this (e.g. disputing a note under someone else's post)."""


@dataclass(frozen=True)
class CaseResult:
    """A case after an action, what to tell the moderator, and the outbox actions it created."""

    case: CaseRow
    message: str
    actions: tuple[int, ...] = ()


def _note(policy: PolicySet, note_id: str | None) -> Note | None:
    """A note in use (None when unknown or withdrawn past its review date)."""
    return policy.note(note_id) if note_id else None


def proposed_note(policy: PolicySet, case: Mapping[str, Any]) -> Note | None:
    """The note a moderator may send for a case: the decision's own note; else the note of the strongest
    active rule OF THE CASE'S LABEL; else that label's default note. Emergencies get crisis resources, never
    a caution note."""
    label = case.get("label")
    if label == "emergency" or case.get("action") == "escalate":
        return None
    detail = case.get("detail") or {}
    note = _note(policy, case.get("note_id") or detail.get("note_id"))
    if note is not None:
        return note
    hits = sorted((h for h in detail.get("rules", []) if h.get("note") and h.get("weight")
                   and not h.get("suppressed_by") and h.get("label") == label), key=lambda h: -h["weight"])
    for hit in hits:
        note = _note(policy, hit["note"])
        if note is not None:
            return note
    if isinstance(label, str) and label in policy.labels:
        return _note(policy, policy.labels[label].default_note)
    return None


class CaseService:
    """Case actions on storage, scoped to one community per call."""

    def __init__(self, store: Storage, policy_source):
        """`policy_source`: a callable returning the PolicySet in force (policies can be reloaded)."""
        self.store = store
        self._policy = policy_source

    @property
    def policy(self) -> PolicySet:
        """The PolicySet in force."""
        return self._policy()

    def proposed_note(self, case: Mapping[str, Any]) -> Note | None:
        """The one note chooser (see module `proposed_note`)."""
        return proposed_note(self.policy, case)

    async def case(self, community: str, case_id: int) -> CaseRow:
        """A case of this community; CaseNotFound for any other."""
        return await self.store.case(case_id, community=community)

    async def _refresh(self, case: CaseRow, actor: str, now) -> tuple[int, ...]:
        """Ask the owning platform to update the case card."""
        if case["platform"] != "discord":
            return ()
        return (await self.store.enqueue_action(case["community_id"], "discord", "refresh_card", actor=actor,
                                                case_id=case["id"], post_id=case["post_id"], now=now),)

    async def claim(self, community: str, case_id: int, moderator: str, *, now: datetime | None = None) -> CaseResult:
        """Lock the case to this moderator."""
        async with self.store.transaction():
            case = await self.store.claim(case_id, moderator, community=community, now=now)
            actions = await self._refresh(case, moderator, now)
        return CaseResult(case, f"Case #{case_id} is yours.", actions)

    async def unclaim(self, community: str, case_id: int, moderator: str, *,
                      now: datetime | None = None) -> CaseResult:
        """Give the case back to the queue."""
        async with self.store.transaction():
            case = await self.store.unclaim(case_id, moderator, community=community, now=now)
            actions = await self._refresh(case, moderator, now)
        return CaseResult(case, f"Case #{case_id} is back in the queue.", actions)

    def _check_reason(self, verb: str, reason_code: str | None) -> None:
        codes = self.policy.community.reason_codes
        if reason_code not in codes:
            raise ValueError(f"choose a reason to {verb} (one of: {', '.join(codes)})")

    async def _actionable(self, community: str, case_id: int, moderator: str, verb: str) -> CaseRow:
        case = await self.store.case(case_id, community=community)
        check_actionable(case, moderator)
        if verb != "dismiss" and (case["kind"] == "replay" or case["platform"] not in ACTIONABLE_PLATFORMS):
            raise CaseConflict(f"case #{case_id} comes from a replayed history: nothing can be posted or removed;"
                               " dismiss it or clear replayed cases")
        return case

    async def send_note(self, community: str, case_id: int, moderator: str, *,
                        now: datetime | None = None) -> CaseResult:
        """Reserve the one note of this post with its cooldown, queue it for the post's platform, close the case."""
        async with self.store.transaction():
            case = await self._actionable(community, case_id, moderator, "send_note")
            note = self.proposed_note(case)
            if note is None:
                raise CaseConflict(f"no caution note fits case #{case_id}; dismiss, remove or escalate it instead")
            if case.get("deleted_at") or not case.get("text"):
                raise CaseConflict(f"the post of case #{case_id} was deleted")
            if not await self.store.claim_reply(case["post_id"], "note", now=now):
                raise CaseConflict(f"a note was already sent for the post of case #{case_id}")
            # A moderator's choice overrides the cooldown, but the note still counts against it.
            cooldown_id = await self.store.record_note(community, case["channel_id"], case["author_id"], note.topic,
                                                       now=now)
            action = await self.store.enqueue_action(
                community, case["platform"], "post_note", actor=moderator, case_id=case_id, post_id=case["post_id"],
                detail={"note_id": note.id, "cooldown_id": cooldown_id, "decision_id": case["decision_id"]}, now=now)
            await self.store.audit(moderator, "note_requested", community=community, case_id=case_id,
                                   post_id=case["post_id"], decision_id=case["decision_id"],
                                   detail={"note_id": note.id}, now=now)
            case = await self.store.resolve(case_id, moderator, "sent_note", community=community, now=now)
            actions = (action, *await self._refresh(case, moderator, now))
        return CaseResult(case, f"Case #{case_id}: note `{note.id}` is being posted under the post.", actions)

    async def dismiss(self, community: str, case_id: int, moderator: str, reason_code: str | None, *,
                      now: datetime | None = None) -> CaseResult:
        """Close as a false positive, with a reason code."""
        self._check_reason("dismiss", reason_code)
        async with self.store.transaction():
            case = await self.store.resolve(case_id, moderator, "dismissed", community=community,
                                            reason_code=reason_code, now=now)
            actions = await self._refresh(case, moderator, now)
        return CaseResult(case, f"Case #{case_id}: dismissed with reason `{reason_code}`.", actions)

    async def remove(self, community: str, case_id: int, moderator: str, reason_code: str | None, *,
                     now: datetime | None = None) -> CaseResult:
        """Close the case and have the post deleted on its platform, with the reason in the audit log."""
        self._check_reason("remove", reason_code)
        async with self.store.transaction():
            case = await self._actionable(community, case_id, moderator, "remove")
            action = await self.store.enqueue_action(
                community, case["platform"], "delete_post", actor=moderator, case_id=case_id,
                post_id=case["post_id"], detail={"reason_code": reason_code}, now=now)
            case = await self.store.resolve(case_id, moderator, "removed", community=community,
                                            reason_code=reason_code, now=now)
            actions = (action, *await self._refresh(case, moderator, now))
        return CaseResult(case, f"Case #{case_id}: the post is being removed (reason `{reason_code}`).", actions)

    async def escalate(self, community: str, case_id: int, moderator: str, reason_code: str | None = None, *,
                       now: datetime | None = None) -> CaseResult:
        """Close the case as escalated and alert the on-call role."""
        async with self.store.transaction():
            case = await self.store.case(case_id, community=community)
            check_actionable(case, moderator)
            actions: tuple[int, ...] = ()
            if case["platform"] == "discord" and case["kind"] != "replay":
                actions = (await self.store.enqueue_action(community, "discord", "alert", actor=moderator,
                                                           case_id=case_id, post_id=case["post_id"], now=now),)
            case = await self.store.resolve(case_id, moderator, "escalated", community=community,
                                            reason_code=reason_code, now=now)
            actions += await self._refresh(case, moderator, now)
        return CaseResult(case, f"Case #{case_id} was escalated to the on-call moderators.", actions)

    async def clear_replayed(self, community: str, moderator: str, *, now: datetime | None = None) -> int:
        """Close every open replayed case of the community."""
        return await self.store.clear_replayed(moderator, community=community, now=now)

    # -- members ---------------------------------------------------------------------------------
    async def feedback(self, community: str, decision_id: int, user_id: str, kind: str, *,
                       now: datetime | None = None) -> bool:
        """Helpful / not helpful on a note of this community; False if already given."""
        if await self.store.decision(decision_id, community=community) is None:
            raise CaseNotFound("that note is no longer on record")
        async with self.store.transaction():
            new = await self.store.add_feedback(decision_id, user_id, kind, now=now)
            await self.store.audit(user_id, f"feedback_{kind}", community=community, decision_id=decision_id, now=now)
        return new

    async def dispute(self, community: str, decision_id: int, user_id: str, reason: str, *,
                      now: datetime | None = None) -> CaseResult:
        """The post's author disputes the note under it: stored, and put in front of moderators as a case."""
        decision = await self.store.decision(decision_id, community=community)
        if decision is None:
            raise CaseNotFound("that note is no longer on record")
        if decision["author_id"] != user_id:
            raise NotAllowed("only the member who wrote the post can dispute its note")
        async with self.store.transaction():
            await self.store.add_feedback(decision_id, user_id, "dispute", reason, now=now)
            post = await self.store.post(decision["post_id"], community=community)
            if post is None:  # rolls the feedback back with the transaction
                raise CaseNotFound("that post is no longer on record")
            # open_case reads labels, action and severity only; the stored decision provides all three.
            d = SimpleNamespace(labels=tuple(decision["labels"]), action=decision["action"],
                                severity=SEVERITY[decision["action"]])
            case_id = await self.store.open_case(decision["post_id"], decision_id, d, channel_id=post["channel_id"],
                                                 community_id=community, kind="dispute", now=now)
            await self.store.audit(user_id, "dispute", community=community, case_id=case_id, decision_id=decision_id,
                                   post_id=decision["post_id"], now=now)
            case = await self.store.case(case_id, community=community)
            actions = await self._refresh(case, user_id, now)
        return CaseResult(case, "Thanks. A moderator will review this note.", actions)
