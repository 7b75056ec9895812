"""Typed rows: what the store's reads return, key by key (plain dicts at runtime; the types are for mypy).

One `TypedDict` per shape the rest of Caveat reads: a post, a decision, a case (joined with its post and
decision), an audit event, an outbox action. Times are ISO 8601 UTC text (`bot.storage.clock.iso`), on SQLite
and PostgreSQL alike; JSON columns (`labels`, `scores`, `detail`) arrive parsed where the store says so.
"""
from __future__ import annotations

from typing import Any, TypedDict


class PostRow(TypedDict):
    """One stored post (`post()`, `post_by_message()`): every column of `posts`. Text, author name and URL are
    None once the member deleted the post or its text was purged."""

    id: int
    platform: str
    message_id: str
    community_id: str
    channel_id: str
    channel_name: str
    author_id: str
    author_name: str | None
    text: str | None
    url: str | None
    created_at: str
    edited_at: str | None
    deleted_at: str | None
    purged_at: str | None
    handled_by: str | None  # the bot process acting on the post (None: none, or a replay / the sandbox)


class DecisionRow(TypedDict):
    """One stored decision (`latest_decision()`): every column of `decisions`, its JSON columns parsed."""

    id: int
    post_id: int
    created_at: str
    action: str
    labels: list[str]
    scores: dict[str, float]
    detail: dict[str, Any]  # Decision.to_dict()
    note_id: str | None
    topic: str | None
    mode: str
    shadow: int  # 0 live, 1 shadow mode, 2 replayed history
    model_version: str
    policy_version: str


class CommunityDecisionRow(DecisionRow):
    """A decision read for one community (`decision()`): with its post's community and author."""

    community_id: str
    author_id: str


class CaseRow(TypedDict):
    """One case (`case()`, `cases()`, and the case actions' results): every column of `cases`, joined with its
    post (text, author, link; `posted_at` is the post's time) and its decision (JSON columns parsed)."""

    # cases
    id: int
    post_id: int
    decision_id: int
    community_id: str
    channel_id: str
    label: str | None
    action: str
    priority: int
    kind: str  # flag | dispute | shadow | replay
    status: str  # open | claimed | resolved
    claimed_by: str | None
    claimed_at: str | None
    resolved_by: str | None
    resolved_at: str | None
    resolution: str | None
    reason_code: str | None
    card_message_id: str | None
    created_at: str
    updated_at: str
    realerted_at: str | None
    # its post
    text: str | None
    author_id: str
    author_name: str | None
    url: str | None
    platform: str
    message_id: str
    channel_name: str
    posted_at: str
    deleted_at: str | None
    # its decision
    detail: dict[str, Any]
    scores: dict[str, float]
    labels: list[str]
    note_id: str | None
    model_version: str
    policy_version: str
    mode: str
    shadow: int


class AuditRow(TypedDict):
    """One audit event (`audit_log()`): ids, actor, action and codes, never message text; `detail` parsed."""

    id: int
    at: str
    actor: str
    action: str
    community_id: str  # '' for events of no one community (the retention purge)
    case_id: int | None
    post_id: int | None
    decision_id: int | None
    detail: dict[str, Any]


class _OutboxColumns(TypedDict):
    id: int
    community_id: str
    platform: str
    kind: str  # post_note | delete_post | refresh_card | alert | ...
    case_id: int | None
    post_id: int | None
    actor: str
    created_at: str
    taken_at: str | None
    done_at: str | None
    result: str | None


class ActionRow(_OutboxColumns):
    """One outbox action taken to carry out (`take_actions()`), its `detail` parsed."""

    detail: dict[str, Any]


class PendingActionRow(_OutboxColumns):
    """One outbox action not carried out yet, as the dashboard lists it (`pending_actions()`): `detail` is the
    stored JSON text."""

    detail: str
