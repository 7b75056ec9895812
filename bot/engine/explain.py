"""One-paragraph, human-readable explanation of a Decision, for members ("why am I seeing this") and moderators."""
from __future__ import annotations

from policies.loader import PolicySet

_ACTION_TEXT = {
    "none": "no action",
    "note": "a public caution note",
    "queue": "moderator review",
    "note_and_queue": "a public caution note and moderator review",
    "escalate": "the emergency lane (crisis resources and an urgent moderator alert)",
}


def explain(decision, policy: PolicySet) -> str:
    """Explain which scores crossed which operating points, which rules fired, and what follows."""
    parts: list[str] = []
    mode = decision.mode
    source = {"model": f"model {decision.model_version}", "rules_only": "keyword rules only",
              "fallback": "keyword rules only (the model was unavailable, so matches go to review)"}[mode]
    threshold_mode = "model" if mode == "model" else "rules_only"
    insisting = {r.id: r for r in policy.rules if r.min_action}
    for label in decision.labels:
        action = decision.label_actions[label]
        band = next((b for b in policy.labels[label].bands if b.action == action), None)
        op = policy.threshold(threshold_mode, label, band.threshold) if band else None
        if band is not None and op is not None and decision.scores[label] >= op.value:
            parts.append(f"{label} scored {decision.scores[label]:.2f}, at or above the {band.threshold} threshold "
                         f"{op.value:.2f} ({op.chosen_by}, {op.eval_set})")
        else:
            rules = [h.rule_id for h in decision.rule_hits if h.active and h.label == label and h.rule_id in insisting]
            parts.append(f"{label} scored {decision.scores[label]:.2f}; rule {', '.join(rules)} requires at least "
                         f"{_ACTION_TEXT[action]} when it matches")
    text = ("Scored by " + source + ". ") + ("; ".join(parts) + ". " if parts else "No label reached a threshold. ")
    active = [h for h in decision.rule_hits if h.active and h.weight > 0]
    suppressed = [h for h in decision.rule_hits if not h.active and h.weight > 0]
    if active:
        text += "Rules matched: " + "; ".join(
            f"{h.rule_id} ({h.label}) on " + ", ".join(f"'{s.text}'" for s in h.spans) for h in active) + ". "
    if suppressed:
        text += "Rules set aside because the sentence warns, asks or reports: " + ", ".join(
            h.rule_id for h in suppressed) + ". "
    floor = policy.combine.rule_floor.queue_at_weight
    strong = [h.rule_id for h in active if h.weight >= floor]
    if strong:
        text += (f"Rule {', '.join(strong)} has weight {floor:g} or more, so the post reaches moderator review "
                 "whatever the scores. ")
    text += f"Outcome: {_ACTION_TEXT[decision.action]}"
    if decision.note:
        text += f", with note '{decision.note.id}'"
    return text + f". Policy {decision.policy_version}."
