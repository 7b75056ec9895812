"""The engine's input and output records: Post (ids + text) and Decision (everything needed to audit it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from classifiers.rules import RuleHit
from policies.schema import CrisisResource, Note


@dataclass(frozen=True)
class Post:
    """A post from any platform, reduced to ids and text."""

    platform: str
    message_id: str
    channel_id: str
    author_id: str
    text: str
    community_id: str = ""
    author_name: str = ""
    channel_name: str = ""
    created_at: datetime | None = None
    locale: str | None = None
    url: str | None = None

    @property
    def key(self) -> str:
        """Stable identity across platforms: 'platform:message_id'."""
        return f"{self.platform}:{self.message_id}"


@dataclass(frozen=True)
class Decision:
    """What Caveat decided about one post, and why."""

    post_key: str
    action: str
    labels: tuple[str, ...]
    scores: dict[str, float]
    model_scores: dict[str, float] | None
    rule_scores: dict[str, float]
    label_actions: dict[str, str]
    rule_hits: tuple[RuleHit, ...]
    note: Note | None
    resources: tuple[CrisisResource, ...]
    why: str
    mode: str
    model_version: str
    policy_version: str
    topic: str | None = None
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    # The note this decision would have shown had it not passed its review_by date (it shows none).
    withdrawn_note: str | None = None

    @property
    def note_id(self) -> str | None:
        """The id of the chosen caution note, if any."""
        return self.note.id if self.note else None

    @property
    def severity(self) -> int:
        """0 (none) to 4 (escalate), for sorting the queue."""
        from bot.engine.actions import SEVERITY
        return SEVERITY[self.action]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly record: stored with the case and printed by `caveat check --jsonl`."""
        return {
            "post": self.post_key, "action": self.action, "labels": list(self.labels),
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
            "model_scores": None if self.model_scores is None else {k: round(v, 4) for k, v in self.model_scores.items()},
            "rule_scores": {k: round(v, 4) for k, v in self.rule_scores.items()},
            "label_actions": dict(self.label_actions),
            "rules": [h.to_dict() for h in self.rule_hits],
            "note_id": self.note_id, "topic": self.topic, "why": self.why, "mode": self.mode,
            "model_version": self.model_version, "policy_version": self.policy_version,
            "thresholds": self.thresholds,
            **({"withdrawn_note": self.withdrawn_note} if self.withdrawn_note else {}),
        }
