"""`assess`: combine rule hits and model scores into one Decision, as the policy says.

How scores combine (the one place this is defined):
- Rules alone (no model configured): a label's score is 1 - prod(1 - weight) over its active rule hits,
  compared against the `rules_only` thresholds.
- With the model: a label's score is the model's probability, compared against the `model` thresholds.
  The model judges stance (advising vs asking or warning), which keyword rules cannot; rules then only
  choose the topic and the caution note, and appear in the explanation.
- Model failed or timed out (`model_failed=True`): rules-only scores and thresholds, and any post that a
  weighted rule matched (even a suppressed hit) is queued at least, so a human looks at it.
"""
from __future__ import annotations

from classifiers.rules import RuleHit, RuleSet
from bot.engine.actions import SEVERITY, at_least, has_note, union_all
from bot.engine.decision import Decision, Post
from bot.engine.explain import explain
from policies.loader import PolicySet
from policies.schema import LABELS, Note

RULES_VERSION = "rules-only"


class Engine:
    """A PolicySet with its rules compiled once; `assess` is pure and deterministic."""

    def __init__(self, policy: PolicySet):
        self.policy = policy
        self.rules = RuleSet(policy.rules)

    def assess(self, post: Post, model_scores: dict[str, float] | None = None, *,
               model_version: str = RULES_VERSION, model_failed: bool = False) -> Decision:
        """Decide what to do with `post`, given the model's scores for it (None = rules only)."""
        policy = self.policy
        hits = self.rules.match(post.text)
        rule_scores = _rule_scores(hits)
        use_model = model_scores is not None and not model_failed and "model" in policy.thresholds
        mode = "model" if use_model else ("fallback" if model_failed else "rules_only")
        scores = {label: float(model_scores.get(label, 0.0)) for label in LABELS} if use_model else dict(rule_scores)

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
            if action != "none":
                labels.append(label)
            label_actions[label] = action

        action = union_all(label_actions.values())
        if mode == "fallback" and any(h.weight > 0 for h in hits):
            action = at_least(action, "queue")

        note = _choose_note(policy, hits, label_actions) if has_note(action) else None
        resources = ()
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
            policy_version=policy.version, topic=topic, thresholds=used_thresholds,
        )
        return _with_why(decision, policy)


def _with_why(decision: Decision, policy: PolicySet) -> Decision:
    from dataclasses import replace
    return replace(decision, why=explain(decision, policy))


def _rule_scores(hits: list[RuleHit]) -> dict[str, float]:
    """Noisy-or of the weights of active hits, per label."""
    keep = {label: 1.0 for label in LABELS}
    for hit in hits:
        if hit.active and hit.weight > 0:
            keep[hit.label] *= 1.0 - hit.weight
    return {label: round(1.0 - keep[label], 6) for label in LABELS}


def _choose_note(policy: PolicySet, hits: list[RuleHit], label_actions: dict[str, str]) -> Note | None:
    """The most specific note: a hit on a noted label, then any hit with a note, then the label's default.

    Suppressed hits count here: an exception judges stance, and when the model has judged stance the
    rule's topic is still the best guide to which evidence applies.
    """
    noted = [lab for lab in LABELS if has_note(label_actions[lab])]
    with_note = [h for h in hits if h.note]
    for pool in ([h for h in with_note if h.label in noted], with_note):
        if pool:
            best = max(pool, key=lambda h: h.weight)  # max keeps the first (policy order) on ties
            return policy.notes[best.note]
    for label in noted:
        default = policy.labels[label].default_note
        if default:
            return policy.notes[default]
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
