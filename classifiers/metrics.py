"""Evaluation metrics and operating-point selection, shared by `caveat train` and `caveat eval`."""
from __future__ import annotations

from policies.schema import LABELS

CLASSES = (*LABELS, "benign")


def _as_rows(probs) -> list[list[float]]:
    return [[p[lab] for lab in LABELS] if isinstance(p, dict) else list(p) for p in probs]


def predicted(row: list[float], thresholds) -> list[str]:
    """Labels whose score reaches their threshold (a float for all, or {label: value})."""
    th = thresholds if isinstance(thresholds, dict) else {lab: thresholds for lab in LABELS}
    return [lab for j, lab in enumerate(LABELS) if row[j] >= th[lab]]


def label_metrics(gold: list[str], probs, threshold=0.5) -> dict:
    """Per-label precision/recall/F1, macro-F1 over the four risk labels, benign FPR, confusion matrix."""
    rows = _as_rows(probs)
    preds = [predicted(r, threshold) for r in rows]
    per = {}
    for j, lab in enumerate(LABELS):
        tp = sum(1 for g, p in zip(gold, preds) if g == lab and lab in p)
        fp = sum(1 for g, p in zip(gold, preds) if g != lab and lab in p)
        fn = sum(1 for g, p in zip(gold, preds) if g == lab and lab not in p)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per[lab] = {"precision": round(prec, 4), "recall": round(rec, 4), "f1": round(f1, 4), "support": tp + fn}
    benign = [p for g, p in zip(gold, preds) if g == "benign"]
    confusion = {g: {c: 0 for c in CLASSES} for g in CLASSES}
    for g, r, p in zip(gold, rows, preds):
        top = max(p, key=lambda lab: r[LABELS.index(lab)]) if p else "benign"
        confusion[g][top] += 1
    return {
        "per_label": per, "macro_f1": round(sum(m["f1"] for m in per.values()) / len(LABELS), 4),
        "benign_fpr": round(sum(1 for p in benign if p) / len(benign), 4) if benign else 0.0,
        "n": len(gold), "confusion": confusion,
    }


def pr_points(scores: list[float], positive: list[bool]) -> list[tuple[float, float, float]]:
    """(threshold, precision, recall) at every distinct score, highest threshold first."""
    pairs = sorted(zip(scores, positive), key=lambda x: -x[0])
    total_pos = sum(positive)
    out, tp, fp = [], 0, 0
    for i, (s, pos) in enumerate(pairs):
        tp += pos
        fp += not pos
        if i + 1 < len(pairs) and pairs[i + 1][0] == s:
            continue
        out.append((s, tp / (tp + fp), tp / total_pos if total_pos else 0.0))
    return out


def max_recall_at_precision(scores, positive, min_precision: float) -> tuple[float, float, float] | None:
    """Lowest threshold whose precision is at least `min_precision` (so recall is maximal); None if none is."""
    best = None
    for t, p, r in pr_points(scores, positive):
        if p >= min_precision and (best is None or r > best[2]):
            best = (t, p, r)
    return best


def threshold_for_recall(scores, positive, min_recall: float) -> tuple[float, float, float] | None:
    """Highest threshold whose recall is at least `min_recall` (the best precision at that recall)."""
    for t, p, r in pr_points(scores, positive):
        if r >= min_recall:
            return (t, p, r)
    return None
