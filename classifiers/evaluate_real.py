"""Judge Caveat on real posts: `real-dev` scores, operating points by cross-validation, held-out fold metrics.

Operating points are chosen on the fitting folds and applied to the held-out fold, so every reported number
comes from posts the thresholds never saw. The shipped thresholds (`--write-thresholds`) are chosen the same
way on all of real-dev; the cross-validated numbers estimate how they do on new posts.

The rules that choose operating points, per label (scores are the calibrated combination in bot/engine/engine.py):
- note (public caution note): the lowest threshold whose precision on the fitting folds is >= NOTE_PRECISION,
  never below NOTE_FLOOR (more likely than not);
- queue (moderators only): the threshold with the best F1 on the fitting folds, never above the note threshold;
- emergency escalate (public crisis reply + moderator alert): the lowest threshold with precision >=
  ESCALATE_PRECISION, never below ESCALATE_FLOOR;
- emergency queue (urgent moderator review, no public reply): the highest threshold with recall >= EMERGENCY_RECALL.
"""
from __future__ import annotations

import hashlib
from typing import Any

from classifiers.metrics import pr_points
from policies.schema import LABELS

NOTE_PRECISION = 0.90
NOTE_FLOOR = 0.5
ESCALATE_PRECISION = 0.90
ESCALATE_FLOOR = 0.5
EMERGENCY_RECALL = 0.92
FOLDS = 5
PUBLIC = ("note", "note_and_queue", "escalate")
BAND_ACTIONS = {"note": None, "queue": "queue", "escalate": "escalate"}


def _lowest_at_precision(scores, positive, target, floor) -> float:
    best = None
    for t, p, _r in pr_points(scores, positive):
        if p >= target:
            best = t
    return max(best, floor) if best is not None else 1.01


def _best_f1(scores, positive) -> float:
    best, best_t = -1.0, 1.01
    for t, p, r in pr_points(scores, positive):
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        if f1 > best:
            best, best_t = f1, t
    return best_t


def _highest_at_recall(scores, positive, target) -> float:
    for t, _p, r in pr_points(scores, positive):
        if r >= target:
            return t
    return 0.0


def choose(scores: list[list[float]], gold: list[str]) -> dict[str, dict[str, float]]:
    """Operating points {label: {band: threshold}} chosen on these rows by the module's rules."""
    out = {}
    for j, lab in enumerate(LABELS):
        s = [row[j] for row in scores]
        pos = [g == lab for g in gold]
        if lab == "emergency":
            esc = _lowest_at_precision(s, pos, ESCALATE_PRECISION, ESCALATE_FLOOR)
            out[lab] = {"escalate": esc, "queue": min(esc, _highest_at_recall(s, pos, EMERGENCY_RECALL))}
        else:
            note = _lowest_at_precision(s, pos, NOTE_PRECISION, NOTE_FLOOR)
            out[lab] = {"note": note, "queue": min(note, _best_f1(s, pos))}
    return out


def label_action(label: str, score: float, points: dict[str, float], bands) -> str:
    """The action the policy's bands give `label` at `score` (bands harshest first)."""
    for band in bands:
        t = points.get(band.threshold)
        if t is not None and score >= t:
            return band.action
    return "none"


def floored_labels(decision, policy) -> set[str]:
    """Labels that a strong active rule hit sends to the queue whatever the scores (the engine's rule floor)."""
    floor = policy.combine.rule_floor.queue_at_weight
    return {h.label for h in decision.rule_hits if h.active and h.weight >= floor}


def decided_actions(decision, policy) -> dict[str, str]:
    """A decision's action per label, with the rule floor's queue counted against the label that caused it."""
    acts = dict(decision.label_actions)
    for lab in floored_labels(decision, policy):
        if acts[lab] == "none":
            acts[lab] = "queue"
    return acts


def folds_for(rows: list[dict], k: int = FOLDS) -> list[int]:
    """Fold per row: stratified by label, C-SSRS users kept whole, deterministic."""
    def group(r):
        sid = r["source_id"]
        if r["source"] == "cssrs_posts" and ":user-" in sid:
            return "cssrs:" + sid.split(":")[1]
        return f"{r['source']}:{sid}"
    by_label: dict[str, list[str]] = {}
    for r in rows:
        by_label.setdefault(r["label"], [])
        g = group(r)
        if g not in by_label[r["label"]]:
            by_label[r["label"]].append(g)
    fold_of_group: dict[str, int] = {}
    for lab, groups in by_label.items():
        groups.sort(key=lambda g: hashlib.sha256(g.encode()).hexdigest())
        for i, g in enumerate(groups):
            fold_of_group.setdefault(g, i % k)
    return [fold_of_group[group(r)] for r in rows]


def evaluate(rows: list[dict], scores: list[list[float]], policy, folds: list[int] | None = None,
             floored: list[set[str]] | None = None) -> dict:
    """Cross-validated actions per row and the metrics a moderator cares about, overall and per slice.

    `floored[i]`: labels whose strong rule hit puts row i in the queue whatever its scores (the engine's rule floor).
    """
    folds = folds if folds is not None else folds_for(rows)
    actions: list[dict[str, str]] = [dict() for _ in rows]
    chosen = []
    for k in sorted(set(folds)):
        fit = [i for i, f in enumerate(folds) if f != k]
        points = choose([scores[i] for i in fit], [rows[i]["label"] for i in fit])
        chosen.append(points)
        for i, f in enumerate(folds):
            if f == k:
                actions[i] = {lab: label_action(lab, scores[i][j], points[lab], policy.labels[lab].bands)
                              for j, lab in enumerate(LABELS)}
                for lab in (floored[i] if floored else ()):
                    if actions[i][lab] == "none":
                        actions[i][lab] = "queue"
    report: dict[str, Any] = {"all": metrics(rows, actions), "without_borderline": metrics(
        [r for r in rows if not r["borderline"]], [a for r, a in zip(rows, actions) if not r["borderline"]])}
    report["per_source"] = {}
    for source in sorted({r["source"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["source"] == source]
        report["per_source"][source] = metrics([rows[i] for i in idx], [actions[i] for i in idx])
    report["fold_points"] = chosen
    report["actions"] = actions
    return report


def metrics(rows: list[dict], actions: list[dict[str, str]]) -> dict:
    """Per label P/R/F1 (a label counts as predicted when Caveat acts on it at all), macro-F1, benign rates."""
    per: dict[str, dict[str, Any]] = {}
    for lab in LABELS:
        tp = sum(1 for r, a in zip(rows, actions) if r["label"] == lab and a[lab] != "none")
        fp = sum(1 for r, a in zip(rows, actions) if r["label"] != lab and a[lab] != "none")
        fn = sum(1 for r, a in zip(rows, actions) if r["label"] == lab and a[lab] == "none")
        p = tp / (tp + fp) if tp + fp else 0.0
        rc = tp / (tp + fn) if tp + fn else 0.0
        pub = [r["label"] == lab for r, a in zip(rows, actions) if a[lab] in PUBLIC]
        per[lab] = {"precision": round(p, 4), "recall": round(rc, 4),
                    "f1": round(2 * p * rc / (p + rc), 4) if p + rc else 0.0, "support": tp + fn,
                    # of the posts that got this label's public note or crisis reply, how many carry the label
                    "public_n": len(pub), "public_precision": round(sum(pub) / len(pub), 4) if pub else None}
    benign = [a for r, a in zip(rows, actions) if r["label"] == "benign"]
    emerg = [a for r, a in zip(rows, actions) if r["label"] == "emergency"]
    present = [lab for lab in LABELS if per[lab]["support"]]
    return {
        "n": len(rows), "per_label": per,
        "macro_f1": round(sum(per[lab]["f1"] for lab in present) / len(present), 4) if present else None,
        "benign_n": len(benign),
        "benign_public_rate": round(sum(1 for a in benign if any(v in PUBLIC for v in a.values())) / len(benign), 4) if benign else None,
        "benign_any_rate": round(sum(1 for a in benign if any(v != "none" for v in a.values())) / len(benign), 4) if benign else None,
        "emergency_recall_any": round(sum(1 for a in emerg if a["emergency"] != "none") / len(emerg), 4) if emerg else None,
        "emergency_recall_escalated": round(sum(1 for a in emerg if a["emergency"] == "escalate") / len(emerg), 4) if emerg else None,
    }
