"""`assess`: combine rule hits and model scores into one Decision, as the policy says.

How scores combine (the one place this is defined):
- Rules alone (no model configured): a label's score is 1 - prod(1 - weight) over its active rule hits,
  compared against the `rules_only` thresholds.
- With the model: a label's score is a learned, calibrated combination of the model and the rules
  (`combine.yaml`, fitted by `caveat train` on held-out training posts, mostly real ones):
      score = sigmoid(bias + a * logit(model probability) + b * R + c * S)
  where R is the noisy-or of the label's active rule weights and S the weight of its strongest hit that an
  exception suppressed (a warning, a question). A label with no fitted weights uses the model's probability.
  The score is compared against the `model` thresholds; rules also choose the topic and the caution note.
- A rule with `min_action` (a few curated, precise rules) raises its label to at least that action when it hits
  and no exception excuses it.
- Floor, in every mode: an active rule hit of weight >= `rule_floor.queue_at_weight` puts the post in the
  moderators' queue at least, whatever the scores say (a crisis-rule hit never does nothing).
- A chosen note past its review_by date is withdrawn (`PolicySet.note` gives None): no public note is shown,
  `note` and `note_and_queue` become `queue`, and `why` says so. The emergency lane never depends on notes.
- Model failed or timed out (`model_failed=True`): rules-only scores and thresholds, and any post that a
  weighted rule matched (even a suppressed hit) is queued at least, so a human looks at it.
"""
from __future__ import annotations

import math
from typing import cast

from classifiers.normalize import model_input
from classifiers.rules import RuleHit, RuleSet, label_rule_features
from bot.engine.actions import SEVERITY, at_least, has_note, union_all
from bot.engine.decision import Decision, Post
from bot.engine.explain import explain
from policies.loader import PolicySet
from policies.schema import LABELS, CrisisResource, Label, Note

RULES_VERSION = "rules-only"


class Engine:
    """A PolicySet with its rules compiled once; `assess` is pure and deterministic."""

    def __init__(self, policy: PolicySet):
        self.policy = policy
        self.rules = RuleSet(policy.rules)
        self._rules_by_id = {r.id: r for r in policy.rules}

    def model_input(self, text: str) -> str:
        """The text the model must score for `text`: the rules' normalization (homoglyphs, leetspeak folded)."""
        return model_input(text, self.rules.watched)

    def assess(self, post: Post, model_scores: dict[str, float] | None = None, *,
               model_version: str = RULES_VERSION, model_failed: bool = False) -> Decision:
        """Decide what to do with `post`, given the model's scores for it (None = rules only)."""
        policy = self.policy
        hits = self.rules.match(post.text)
        rule_scores = _rule_scores(hits)
        use_model = model_scores is not None and not model_failed and "model" in policy.thresholds
        mode = "model" if use_model else ("fallback" if model_failed else "rules_only")
        scores = (_combined(policy, model_scores, hits) if use_model and model_scores is not None
                  else dict(rule_scores))

        label_actions: dict[str, str] = {}
        used_thresholds: dict[str, dict[str, float]] = {}
        labels: list[str] = []
        threshold_mode = "model" if use_model else "rules_only"
        for label in LABELS:
            lp = policy.labels[label]
            action = "none"
            used_thresholds[label] = {}
            for band in lp.bands:
                op = policy.threshold(threshold_mode, label, band.threshold)
                if op is None:
                    continue
                used_thresholds[label][band.threshold] = op.value
                if action == "none" and scores[label] >= op.value:
                    action = band.action
            label_actions[label] = action
        for hit in hits:  # curated rules that insist on a minimum action for their label
            rule = self._rules_by_id.get(hit.rule_id)
            if hit.active and rule is not None and rule.min_action:
                label_actions[hit.label] = at_least(label_actions[hit.label], rule.min_action)
        labels = [label for label in LABELS if label_actions[label] != "none"]

        action = union_all(label_actions.values())
        if mode == "fallback" and any(h.weight > 0 for h in hits):
            action = at_least(action, "queue")
        floor = policy.combine.rule_floor.queue_at_weight
        if any(h.active and h.weight >= floor for h in hits):
            action = at_least(action, "queue")

        note_id = _choose_note(policy, hits, label_actions) if has_note(action) else None
        note = policy.note(note_id)
        withdrawn = note_id if note_id and note is None else None
        if withdrawn:  # an unreviewed note is never shown: the post goes to the moderators instead
            action = "queue"
        resources: tuple[CrisisResource, ...] = ()
        if action == "escalate":
            crisis = policy.community.crisis_resources
            resources = crisis.get(post.locale or "", crisis[policy.community.default_locale])
        labels.sort(key=lambda lab: (-SEVERITY[label_actions[lab]], -scores[lab]))
        topic = _topic(hits, note)
        decision = Decision(
            post_key=post.key, action=action, labels=tuple(labels), scores=scores,
            model_scores=dict(model_scores) if model_scores is not None else None, rule_scores=rule_scores,
            label_actions=label_actions, rule_hits=tuple(hits), note=note, resources=tuple(resources), why="",
            mode=mode, model_version=model_version if use_model or model_failed else RULES_VERSION,
            policy_version=policy.version, topic=topic, thresholds=used_thresholds, withdrawn_note=withdrawn,
        )
        return _with_why(decision, policy)


def _with_why(decision: Decision, policy: PolicySet) -> Decision:
    from dataclasses import replace
    why = explain(decision, policy)
    if decision.withdrawn_note:
        why += (f" Note '{decision.withdrawn_note}' was withdrawn (past its review date "
                f"{policy.withdrawn(decision.withdrawn_note)}), so no public note is shown and the post goes to "
                "moderator review instead.")
    return replace(decision, why=why)


def _combined(policy: PolicySet, model_scores: dict[str, float], hits: list[RuleHit]) -> dict[str, float]:
    """Each label's score from the model probability and the rule features, by the policy's fitted combination."""
    feats = label_rule_features(hits, LABELS)
    out = {}
    for label in LABELS:
        p = min(max(float(model_scores.get(label, 0.0)), 1e-6), 1 - 1e-6)
        w = policy.combine.labels.get(cast(Label, label))  # LABELS holds exactly the Label values
        if w is None:
            out[label] = p
            continue
        active, suppressed = feats[label]
        z = w.bias + w.model_logit * max(min(math.log(p / (1 - p)), 12.0), -12.0) + w.rule_active * active + w.rule_suppressed * suppressed
        out[label] = round(1.0 / (1.0 + math.exp(-max(min(z, 40.0), -40.0))), 6)
    return out


def _rule_scores(hits: list[RuleHit]) -> dict[str, float]:
    """Noisy-or of the weights of active hits, per label."""
    return {label: active for label, (active, _suppressed) in label_rule_features(hits, LABELS).items()}


def _choose_note(policy: PolicySet, hits: list[RuleHit], label_actions: dict[str, str]) -> str | None:
    """The id of the most specific note: a hit on a noted label, then any hit with a note, then the label's default.

    Suppressed hits count here: an exception judges stance, and when the model has judged stance the
    rule's topic is still the best guide to which evidence applies. The id may name a withdrawn note: the caller
    asks `policy.note()`, and a withdrawn choice is not swapped for a vaguer note.
    """
    noted = [lab for lab in LABELS if has_note(label_actions[lab])]
    with_note = [h for h in hits if h.note]
    for pool in ([h for h in with_note if h.label in noted], with_note):
        if pool:
            return max(pool, key=lambda h: h.weight).note  # max keeps the first (policy order) on ties
    for label in noted:
        default = policy.labels[label].default_note
        if default:
            return default
    return None


def _topic(hits: list[RuleHit], note: Note | None) -> str | None:
    """The post's topic, for cooldowns: the note's topic, else the strongest hit's topic."""
    if note:
        return note.topic
    topical = [h for h in hits if h.topic and h.active]
    return max(topical, key=lambda h: h.weight).topic if topical else None


def assess(post: Post, policy: PolicySet, model_scores: dict[str, float] | None = None, **kw) -> Decision:
    """One-shot `Engine(policy).assess(...)`; long-lived callers keep an Engine to compile rules once."""
    return Engine(policy).assess(post, model_scores, **kw)
