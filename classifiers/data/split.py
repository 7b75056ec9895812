"""Split labeled examples into train and dev by topic template (`group`), so dev holds unseen templates.

    python -m classifiers.data.split RAW.jsonl [RAW2.jsonl ...]

A group goes to dev when sha256(group) mod 100 < 20; the split is stable when files are added.
"""
from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
LABELS = ("emergency", "risky_self_treatment", "unsupported_claim", "promotion", "benign")


def is_dev(group: str, percent: int = 20) -> bool:
    """Stable assignment of a topic template to dev."""
    return int(hashlib.sha256(group.encode()).hexdigest(), 16) % 100 < percent


def main(paths: list[str]) -> int:
    """Read raw files, validate rows, write train.jsonl and dev.jsonl next to this script."""
    rows, seen = [], set()
    for path in paths:
        for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if row.get("label") not in LABELS or not str(row.get("text", "")).strip() or not row.get("group"):
                raise SystemExit(f"{path}:{n}: needs text, group and a label in {LABELS}")
            key = " ".join(row["text"].lower().split())
            if key in seen:
                continue
            seen.add(key)
            rows.append({"id": row["id"], "text": row["text"], "label": row["label"], "group": row["group"]})
    train = [r for r in rows if not is_dev(r["group"])]
    dev = [r for r in rows if is_dev(r["group"])]
    for name, part in (("train", train), ("dev", dev)):
        with open(HERE / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for r in part:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(name, len(part), dict(Counter(r["label"] for r in part)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
