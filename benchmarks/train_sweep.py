"""Train one configuration and print dev metrics after every epoch at operating points chosen on dev.

`python benchmarks/train_sweep.py NAME '{"epochs": 3, "seed": 14}'` (keys: `classifiers.train.DEFAULTS`). The
artifact goes to /tmp/caveat-sweep/NAME (never the shipped one). Scores are fp32; each epoch's thresholds are
chosen on the same dev set the way `caveat eval --write-thresholds` chooses them, so numbers compare configurations,
not the served model.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from classifiers.evaluate import choose_points  # noqa: E402
from classifiers.metrics import label_metrics  # noqa: E402
from classifiers.normalize import normalize_text  # noqa: E402
from classifiers.lora_train import read_rows, train  # noqa: E402
from policies.schema import LABELS  # noqa: E402


def report(gold: list[str], rows: list[list[float]]) -> str:
    th = {}
    for j, lab in enumerate(LABELS):
        pts = choose_points([r[j] for r in rows], [g == lab for g in gold], lab, "dev", {})
        th[lab] = min(p["value"] for p in pts.values())
    m = label_metrics(gold, rows, th)
    return (f"macro-F1 {m['macro_f1']:.3f} benign FPR {m['benign_fpr']:.3f} emergency threshold {th['emergency']:.3f}"
            f" | {emergency_tail(gold, rows)}")


def emergency_tail(gold: list[str], rows: list[list[float]]) -> str:
    """Less noisy than one operating point: how many benign posts score at or above the emergency post that
    sits at recall 0.95 / 0.97 / 0.98, and the emergency-vs-benign ROC AUC."""
    j = LABELS.index("emergency")
    pos = sorted((r[j] for g, r in zip(gold, rows) if g == "emergency"), reverse=True)
    neg = [r[j] for g, r in zip(gold, rows) if g == "benign"]
    parts = []
    for recall in (0.95, 0.97, 0.98):
        t = pos[max(0, int(round(recall * len(pos))) - 1)]
        parts.append(f"benign>=t@R{recall:.2f} {sum(s >= t for s in neg) / len(neg):.3f}")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return " ".join(parts) + f" AUC {wins / (len(pos) * len(neg)):.4f}"


def main(name: str, overrides: dict) -> None:
    data = REPO / "classifiers" / "data"
    dev = read_rows(data / "dev.jsonl")
    gold, texts = [r["label"] for r in dev], [normalize_text(r["text"]) for r in dev]
    started = time.time()

    def on_epoch(epoch, predict):
        print(f"{name} epoch {epoch} ({time.time() - started:.0f} s): {report(gold, predict(texts).tolist())}", flush=True)

    result = train(data / "train.jsonl", data / "dev.jsonl", Path("/tmp/caveat-sweep") / name, progress=False,
                   on_epoch=on_epoch, **overrides)
    print(f"{name}: {result['version']} in {result['seconds']} s")


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
