"""The storage contract: what the rest of Caveat may call on a store, one `Protocol` per aggregate.

Code outside `bot/storage` takes the narrowest of these that covers what it uses (`PolicySync` a `Policies`,
the pipeline the whole `Storage`), never the concrete `Store`. Both backends, `Store` (SQLite) and
`PostgresStore` (PostgreSQL), implement every one of them: mypy checks it below (a signature that drifts in
either fails `mypy`), and tests/storage/test_contract.py checks that each member has the same signature on both.

Every aggregate has `transaction()`: `async with store.transaction():` groups several calls (of any aggregate
of the same store) into one atomic unit; nested use by the same task joins the outer one. Each write outside
one runs in a transaction of its own. Rows come back as the typed dicts of `bot.storage.rows`.

Nothing outside `bot/storage` writes SQL: a query the rest of Caveat needs becomes a method here.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from bot.engine.decision import Decision, Post
from bot.storage.rows import (ActionRow, AuditRow, CaseRow, CommunityDecisionRow, DecisionRow, PendingActionRow,
                              PostRow)

__all__ = ["Audit", "Cases", "DashboardQueries", "Health", "Outbox", "Policies", "PostsAndDecisions", "Privacy",
           "Recovery", "RepliesAndCooldowns", "Sessions", "SettingsStore", "Stats", "Storage", "Transactional"]


class Transactional(Protocol):
    """Explicit transactions, shared by every aggregate."""

    def transaction(self, *, community: str | None = None) -> AbstractAsyncContextManager[Any]:
        """One atomic unit of work: commit at the end, roll back on any error; nested use joins the outer one.
        `community`: every write in it belongs to that one community (see PostgresStore.transaction)."""
        ...


class PostsAndDecisions(Transactional, Protocol):
    """Posts as the platforms deliver them, the decisions made on them, and members' feedback on those."""

    async def upsert_post(self, post: Post, *, now: datetime | None = None) -> tuple[int, bool]: ...

    async def edit_post(self, post_id: int, text: str, *, now: datetime | None = None) -> None: ...

    async def post(self, post_id: int, *, community: str) -> PostRow | None: ...

    async def post_by_message(self, platform: str, message_id: str) -> PostRow | None: ...

    async def communities(self) -> list[str]: ...

    async def save_decision(self, post_id: int, decision: Decision, *, community: str, shadow: bool = False,
                            replayed: bool = False, now: datetime | None = None) -> int: ...

    async def decision(self, decision_id: int, *, community: str) -> CommunityDecisionRow | None: ...

    async def latest_decision(self, post_id: int) -> DecisionRow | None: ...

    async def add_feedback(self, decision_id: int, user_id: str, kind: str, reason: str | None = None,
                           *, now: datetime | None = None) -> bool: ...

    async def feedback(self, decision_id: int) -> dict[str, int]: ...

    async def dispute_reason(self, decision_id: int) -> str | None: ...


class Cases(Transactional, Protocol):
    """The moderators' review cases, always read and changed for one community."""

    async def open_case(self, post_id: int, decision_id: int, decision, *, channel_id: str, community_id: str,
                        kind: str = "flag", now: datetime | None = None) -> int: ...

    async def has_open_case(self, post_id: int) -> bool: ...

    async def case(self, case_id: int, *, community: str) -> CaseRow: ...

    async def cases(self, *, community: str, status: str | None = "open", label: str | None = None,
                    channel_id: str | None = None, kind: str | None = None, sort: str = "severity",
                    limit: int = 50, offset: int = 0, author_id: str | None = None, post_id: int | None = None,
                    include_replayed: bool = False) -> list[CaseRow]: ...

    async def count_cases(self, *, community: str, status: str = "open", include_replayed: bool = False) -> int: ...

    async def claim(self, case_id: int, moderator: str, *, community: str, now: datetime | None = None) -> CaseRow: ...

    async def unclaim(self, case_id: int, moderator: str, *, community: str,
                      now: datetime | None = None) -> CaseRow: ...

    async def resolve(self, case_id: int, moderator: str, resolution: str, *, community: str,
                      reason_code: str | None = None, now: datetime | None = None) -> CaseRow: ...

    async def clear_replayed(self, moderator: str, *, community: str, now: datetime | None = None) -> int: ...

    async def set_case_card(self, case_id: int, message_id: str) -> None: ...

    async def unattended_emergencies(self, *, older_than: datetime, communities: Collection[str] | None = None,
                                     limit: int = 50) -> list[dict]: ...

    async def mark_realerted(self, case_id: int, *, now: datetime | None = None) -> bool: ...


class Audit(Transactional, Protocol):
    """The append-only audit log of each community (ids and codes, never message text)."""

    async def audit(self, actor: str, action: str, *, community: str, case_id: int | None = None,
                    post_id: int | None = None, decision_id: int | None = None, detail: dict | None = None,
                    now: datetime | None = None) -> int: ...

    async def audit_log(self, *, community: str, actor: str | None = None, action: str | None = None,
                        case_id: int | None = None, post_id: int | None = None, limit: int = 200,
                        offset: int = 0) -> list[AuditRow]: ...


class RepliesAndCooldowns(Transactional, Protocol):
    """The one public reply of each kind per post, and the cooldowns notes count against."""

    async def claim_reply(self, post_id: int, kind: str, *, now: datetime | None = None) -> bool: ...

    async def set_reply_message(self, post_id: int, kind: str, message_id: str | None) -> None: ...

    async def release_reply(self, post_id: int, kind: str) -> None: ...

    async def replies(self, post_id: int) -> dict[str, str | None]: ...

    async def note_allowed(self, community: str, channel_id: str, author_id: str, topic: str, *,
                           per_user_topic_hours: float, per_channel_notes: int, per_channel_window_minutes: float,
                           now: datetime | None = None) -> tuple[bool, str | None]: ...

    async def record_note(self, community: str, channel_id: str, author_id: str, topic: str, *,
                          now: datetime | None = None) -> int: ...

    async def release_note(self, cooldown_id: int) -> None: ...


class SettingsStore(Transactional, Protocol):
    """Stored setting overrides per scope (`community_scope`, `channel_scope`); not `policies.settings`."""

    async def get_setting(self, scope: str, key: str, default: Any = None) -> Any: ...

    async def settings(self, scope: str) -> dict[str, Any]: ...

    async def set_setting(self, scope: str, key: str, value: Any) -> None: ...


class Privacy(Transactional, Protocol):
    """Removing members' text everywhere it is kept; anonymized daily counts stay."""

    async def delete_post(self, platform: str, message_id: str, *, actor: str = "platform",
                          now: datetime | None = None) -> int | None: ...

    async def forget_user(self, author_id: str, *, community: str, actor: str | None = None,
                          now: datetime | None = None) -> int: ...

    async def purge_retention(self, days: int, *, now: datetime | None = None) -> int: ...

    async def compact(self) -> None: ...

    async def daily_counts(self, *, community: str) -> list[dict]: ...


class Stats(Transactional, Protocol):
    """Moderator-facing statistics, and moderator outcomes exported as labeled examples."""

    async def stats(self, *, community: str) -> dict: ...

    async def export_feedback(self) -> list[dict]: ...


class Outbox(Transactional, Protocol):
    """Platform actions decided in one place and carried out by the adapter that owns the post."""

    async def enqueue_action(self, community: str, platform: str, kind: str, *, actor: str,
                             case_id: int | None = None, post_id: int | None = None, detail: dict | None = None,
                             now: datetime | None = None) -> int: ...

    async def take_actions(self, platform: str, *, communities: Collection[str] | None = None, limit: int = 20,
                           retry_after_seconds: float = 120, now: datetime | None = None) -> list[ActionRow]: ...

    async def finish_action(self, action_id: int, result: str, *, now: datetime | None = None) -> None: ...

    async def pending_actions(self, *, community: str, case_id: int | None = None) -> list[PendingActionRow]: ...


class Sessions(Transactional, Protocol):
    """The dashboard's one-time login links and server-side sessions."""

    async def create_login_link(self, community: str, moderator_id: str, moderator: str, *, minutes: float = 15,
                                now: datetime | None = None) -> str: ...

    async def use_login_link(self, token: str, *, now: datetime | None = None) -> dict | None: ...

    async def create_web_session(self, *, moderator_id: str, moderator: str, community: str, role: str,
                                 hours: float = 12, now: datetime | None = None) -> tuple[str, str]: ...

    async def web_session(self, sid: str, *, now: datetime | None = None) -> dict | None: ...

    async def set_session_community(self, sid: str, community: str) -> None: ...

    async def revoke_web_session(self, sid: str, *, now: datetime | None = None) -> None: ...

    async def revoke_moderator_sessions(self, community: str, moderator_id: str, *,
                                        now: datetime | None = None) -> int: ...

    async def revoke_operator_sessions(self, *, now: datetime | None = None) -> int: ...


class Policies(Transactional, Protocol):
    """The published policies and the one in force, shared by every process on the database."""

    async def publish_policy(self, version: str, files: dict[str, str], *, actor: str,
                             now: datetime | None = None) -> int: ...

    async def active_policy(self) -> dict | None: ...

    async def policy_files(self, version: str) -> dict[str, str] | None: ...

    async def listen_policy(self, callback: Callable[[], object]) -> Callable[[], Awaitable[None]] | None: ...


class Recovery(Transactional, Protocol):
    """Live processes' heartbeats, and taking over the posts a dead one left unfinished."""

    async def heartbeat(self, instance: str, *, now: datetime | None = None) -> None: ...

    async def retire_instance(self, instance: str) -> None: ...

    async def set_handler(self, post_id: int, instance: str) -> None: ...

    async def release_post(self, post_id: int, instance: str) -> None: ...

    async def forget_dead_instances(self, *, dead_before: datetime) -> int: ...

    async def orphaned_posts(self, *, me: str, dead_before: datetime, communities: Collection[str] | None = None,
                             limit: int = 20) -> list[dict]: ...

    async def take_over(self, post_id: int, *, dead: str, me: str) -> bool: ...


class DashboardQueries(Transactional, Protocol):
    """The read-only queries behind the dashboard's pages, each for one community."""

    async def sandbox_feed(self, community: str, *, platform: str = "sandbox", limit: int = 60,
                           post_id: int | None = None) -> list[dict]: ...

    async def judged_decisions(self, community: str) -> list[dict]: ...

    async def decision_scores(self, community: str, *, limit: int = 20000) -> list[dict]: ...

    async def case_channels(self, community: str) -> list[dict]: ...

    async def audit_actions(self, community: str) -> list[str]: ...


class Health(Protocol):
    """The live health probe (`/healthz`): the database answers, and which migrations it has."""

    async def applied_migrations(self) -> set[int]: ...


class Storage(PostsAndDecisions, Cases, Audit, RepliesAndCooldowns, SettingsStore, Privacy, Stats, Outbox, Sessions,
              Policies, Recovery, DashboardQueries, Health, Protocol):
    """The whole store: every aggregate, plus bulk transactions and closing."""

    def batch(self) -> AbstractAsyncContextManager[Any]:
        """A transaction for bulk work (replay groups many posts in one)."""
        ...

    async def close(self) -> None: ...


if TYPE_CHECKING:  # mypy checks that both backends implement the whole contract
    from bot.storage.postgres import PostgresStore
    from bot.storage.store import Store

    def _sqlite_is_storage(store: Store) -> Storage:
        return store

    def _postgres_is_storage(store: PostgresStore) -> Storage:
        return store
