"""How often the served int8 model and the fp32 reference take the same actions on a labeled file.

`python benchmarks/agreement.py [classifiers/data/dev.jsonl]`: acting labels (score at or above the lowest band
threshold of the shipped policy) are compared post by post; prints one JSON line.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import acting_thresholds, decisions  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from classifiers.serving import get_scorer  # noqa: E402
from classifiers.train import read_rows  # noqa: E402
from policies.loader import load_policy  # noqa: E402
from policies.schema import LABELS  # noqa: E402


def main(path: str) -> dict:
    rows = read_rows(path)
    texts = [r["text"] for r in rows]
    policy = load_policy()
    acts = acting_thresholds(policy)
    int8 = get_scorer(backend="onnx-int8")
    fp32 = get_scorer(backend="torch")
    a, b = int8.predict(texts), fp32.predict(texts, batch_size=32)
    same = [x == y for x, y in zip(decisions(a, acts), decisions(b, acts))]
    return {"file": path, "model_version": int8.version, "policy_version": policy.version, "posts": len(texts),
            "same_decisions": sum(same), "agreement": round(sum(same) / len(texts), 4),
            "max_abs_score_diff": round(max(abs(x[lab] - y[lab]) for x, y in zip(a, b) for lab in LABELS), 4)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1] if len(sys.argv) > 1 else str(REPO / "classifiers/data/dev.jsonl"))))
