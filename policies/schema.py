"""Pydantic models for Caveat's policy files (rules, thresholds, actions, notes, community settings)."""
from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LABELS: tuple[str, ...] = ("emergency", "risky_self_treatment", "unsupported_claim", "promotion")
"""The four risk labels; a post with none of them over threshold is benign."""

ACTIONS: tuple[str, ...] = ("none", "note", "queue", "note_and_queue", "escalate")
"""Actions in severity order: the harshest wins when several fire."""

Label = Literal["emergency", "risky_self_treatment", "unsupported_claim", "promotion"]
Action = Literal["none", "note", "queue", "note_and_queue", "escalate"]
BandName = Literal["note", "queue", "escalate"]


class Strict(BaseModel):
    """Base model: unknown keys are errors and instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(Strict):
    """A keyword rule: terms (optionally near other words) or regexes, minus exception patterns."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    label: Label
    description: str = ""
    terms: tuple[str, ...] = ()
    near: tuple[str, ...] = ()
    within: int = Field(default=8, ge=1, le=50)
    patterns: tuple[str, ...] = ()
    exceptions: tuple[str, ...] = ()
    weight: float = Field(ge=0.0, le=1.0)
    note: str | None = None
    topic: str | None = None
    # A curated, precise rule can insist on at least this action for its label when it hits (not excused by an
    # exception), whatever the scores: e.g. rapamycin on a fresh wound always gets its caution note.
    min_action: Action | None = None

    @field_validator("terms", "near")
    @classmethod
    def _words_are_plain(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for word in value:
            if not word.strip():
                raise ValueError("empty term")
        return tuple(w.strip().lower() for w in value)


class OperatingPoint(Strict):
    """A threshold with its provenance, e.g. 'max recall @ precision>=0.95' on dev-v1."""

    value: float = Field(ge=0.0, le=1.0)
    chosen_by: str
    eval_set: str
    metrics: dict[str, float] = Field(default_factory=dict)


class Band(Strict):
    """A score band of one label: at or above the named threshold, take this action.

    `min`/`max` bound the threshold any mode may set for this band (thresholds.yaml, the dashboard, `caveat eval`):
    e.g. the emergency bands' max stays below 1.0 so that no saved threshold can switch the crisis lane off."""

    threshold: BandName
    action: Action
    min: float = Field(default=0.0, ge=0.0, le=1.0)
    max: float = Field(default=1.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _bounds_in_order(self) -> "Band":
        if self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        return self


class LabelPolicy(Strict):
    """What Caveat does for one label: its bands (harshest first) and its default note."""

    description: str = ""
    default_note: str | None = None
    bands: tuple[Band, ...]


class CombineWeights(Strict):
    """One label's learned combination: p = sigmoid(bias + model_logit*logit(model) + rule_active*R + rule_suppressed*S)."""

    bias: float
    model_logit: float = Field(ge=0.0)
    rule_active: float = 0.0
    rule_suppressed: float = 0.0


class RuleFloor(Strict):
    """A rule hit this strong (active, not excused by an exception) always reaches the moderators' queue."""

    queue_at_weight: float = Field(default=0.6, gt=0.0, le=1.0)


class Combine(Strict):
    """How model scores and rule hits combine into a label's score (`combine.yaml`), with provenance."""

    model_version: str | None = None
    fitted_on: str = "not fitted: the model's probability is the score"
    labels: dict[Label, CombineWeights] = Field(default_factory=dict)
    rule_floor: RuleFloor = RuleFloor()


class CrisisResource(Strict):
    """One crisis line or service shown in the emergency reply."""

    name: str
    contact: str
    url: str | None = None


class Cooldowns(Strict):
    """Limits on public notes so Caveat never floods a channel or lectures one member."""

    per_user_topic_hours: float = Field(default=24, ge=0)
    per_channel_notes: int = Field(default=3, ge=0)
    per_channel_window_minutes: float = Field(default=10, ge=0)


class CommunitySettings(Strict):
    """Defaults for a community; per-guild and per-channel overrides live in storage."""

    shadow_mode: bool = True
    cooldowns: Cooldowns = Cooldowns()
    exempt_roles: tuple[str, ...] = ()
    exempt_channels: tuple[str, ...] = ()
    retention_days: int = Field(default=90, ge=1)
    default_locale: str = "en-US"
    crisis_resources: dict[str, tuple[CrisisResource, ...]]
    reason_codes: tuple[str, ...] = (
        "false_positive", "already_handled", "quote_or_debunk", "spam", "dangerous_advice", "seller", "other",
    )


class CitationRef(Strict):
    """A note's pointer into the evidence library (`policies/evidence/citations.yaml`)."""

    ref: str
    caveat: str | None = Field(default=None, max_length=80)


class Citation(Strict):
    """A resolved source shown under a note: only identifiers verified in the evidence library."""

    ref: str
    title: str
    source: str
    year: str
    pmid: str | None = None
    doi: str | None = None
    url: str | None = None
    caveat: str | None = None

    @property
    def byline(self) -> str:
        """Publisher and year as a reader sees them ("NIH, 2019"); the publisher alone when the library has no year."""
        return f"{self.source}, {self.year}" if self.year else self.source

    @property
    def link(self) -> str | None:
        """Best link for a reader: the URL, else a DOI or PubMed link built from a verified id."""
        if self.url:
            return self.url
        if self.doi:
            return f"https://doi.org/{self.doi}"
        if self.pmid:
            return f"https://pubmed.ncbi.nlm.nih.gov/{self.pmid}/"
        return None


class NoteSource(Strict):
    """A caution note as written in `policies/notes/*.yaml`."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    topic: str
    title: str = Field(max_length=120)
    text: str = Field(min_length=20, max_length=600)
    citations: tuple[CitationRef, ...] = Field(min_length=1)
    reviewed_on: date
    review_by: date


class Note(Strict):
    """A caution note ready to show: text plus resolved citations."""

    id: str
    topic: str
    title: str
    text: str
    citations: tuple[Citation, ...]
    reviewed_on: date
    review_by: date
