"""Real posts for training: label rows `(source, source_id, label, note)` joined with text from a data directory.

No real post text lives in this repository. Labels sit in `classifiers/data/real/*.jsonl`; the text comes from
`DATA_DIR/external/<source>.jsonl` at train time (`--data-dir`, default `../shared/data` when it exists). Rows of
`DATA_DIR/real-dev/` and their near-duplicates (same text after folding, same C-SSRS user, the same first 60
letters and digits) never reach training.
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from policies.schema import LABELS
from policies.settings import load_settings

CLASSES = (*LABELS, "benign")
LABEL_DIR = Path(__file__).resolve().parent / "data" / "real"
ENV_DATA_DIR = "CAVEAT_DATA_DIR"


class DataMissing(ValueError):
    """The real-post text a label file refers to is not in the data directory."""


def default_data_dir() -> Path | None:
    """`$CAVEAT_DATA_DIR`, else `../shared/data` next to the project root when it exists."""
    configured = load_settings().data_dir
    if configured is not None:
        return configured
    guess = Path(__file__).resolve().parents[2] / "shared" / "data"
    return guess if guess.is_dir() else None


def fold(text: str) -> str:
    """Letters and digits only, case-folded: how near-duplicates are recognised."""
    text = unicodedata.normalize("NFKC", text).replace("\ufeff", "").lstrip("'").casefold()
    return " ".join(re.findall(r"[a-z0-9]+", text))


def clean_text(row: dict) -> str:
    """The text as training reads it: source artefacts removed (the C-SSRS export's leading quote, U+FEFF)."""
    text = row["text"].replace("\ufeff", "")
    if row.get("source") == "cssrs_posts" and text.startswith("'"):
        text = text[1:]
    return text.strip()


def read_jsonl(path: Path) -> list[dict]:
    """JSON lines; a bad line names the file and line."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
    return out


@dataclass(frozen=True)
class DevGuard:
    """Everything that identifies a real-dev row or a near-duplicate of one."""

    ids: frozenset
    folded: frozenset
    prefixes: frozenset
    users: frozenset

    @classmethod
    def from_dir(cls, data_dir: Path) -> "DevGuard":
        """Read `real-dev/*.jsonl` (an empty guard if the folder is absent)."""
        ids, folded, prefixes, users = set(), set(), set(), set()
        ext: dict[str, set[str]] = {}
        for path in sorted((data_dir / "real-dev").glob("*.jsonl")):
            for r in read_jsonl(path):
                ids.add((r["source"], r["source_id"]))
                f = fold(r["text"])
                folded.add(f)
                if len(f) >= 30:
                    prefixes.add(f[:60])
                if r["source"] == "cssrs_posts":
                    ext.setdefault("cssrs_posts", set()).add(r["source_id"])
        # C-SSRS posts come in per-user threads: keep a dev user's every post out of training.
        for sid in ext.get("cssrs_posts", ()):
            parts = sid.split(":")  # "<sheet file>:<user>:<row>"
            if len(parts) == 3:
                users.add(parts[1])
        return cls(frozenset(ids), frozenset(folded), frozenset(prefixes), frozenset(users))

    def blocks(self, row: dict) -> bool:
        """True when `row` is a real-dev row or too close to one to train on."""
        if (row["source"], row["source_id"]) in self.ids:
            return True
        if row.get("source") == "cssrs_posts":
            parts = row["source_id"].split(":")
            user = row.get("user") or (parts[1] if len(parts) == 3 else None)
            if user in self.users:
                return True
        f = fold(row["text"])
        return f in self.folded or (len(f) >= 30 and f[:60] in self.prefixes)


def load_external(data_dir: Path, sources: set[str]) -> dict[tuple[str, str], dict]:
    """External rows of the named sources keyed by (source, source_id); a missing file raises DataMissing."""
    out = {}
    for source in sorted(sources):
        path = data_dir / "external" / f"{source}.jsonl"
        if not path.is_file():
            raise DataMissing(f"{path}: missing (needed for labels of source '{source}')")
        for r in read_jsonl(path):
            out[(r["source"], r["source_id"])] = r
    return out


def read_labels(paths: list[Path]) -> list[dict]:
    """Label rows {source, source_id, label, note?, weight?}; later files override earlier ones for the same id."""
    by_key: dict[tuple[str, str], dict] = {}
    for path in paths:
        for n, row in enumerate(read_jsonl(path), 1):
            if not isinstance(row, dict) or not isinstance(row.get("source"), str) or not isinstance(row.get("source_id"), str):
                raise ValueError(f"{path}:{n}: needs string 'source' and 'source_id'")
            if row.get("label") not in CLASSES:
                raise ValueError(f"{path}:{n}: 'label' must be one of {', '.join(CLASSES)}")
            if "text" in row:
                raise ValueError(f"{path}:{n}: label files carry no post text (found 'text')")
            by_key[(row["source"], row["source_id"])] = {**row, "_where": f"{path.name}:{n}"}
    return list(by_key.values())


def label_files(label_dir: Path = LABEL_DIR) -> list[Path]:
    """Label files in override order: source mappings first (`map-*`), hand relabels (`hand-*`) last."""
    files = sorted(label_dir.glob("*.jsonl"))
    return sorted(files, key=lambda p: (not p.name.startswith("map-"), p.name))


def join(labels: list[dict], data_dir: Path | None, *, guard: DevGuard | None = None) -> tuple[list[dict], dict]:
    """Training rows {text, label, source, source_id, weight} for label rows, plus counts of what was dropped.

    Raises DataMissing, naming the directory, when the data is not there or ids are missing from it.
    """
    if data_dir is None or not Path(data_dir).is_dir():
        raise DataMissing(f"real-post data directory {data_dir or '(none)'} not found: pass --data-dir DIR "
                          f"(the folder holding external/ and real-dev/) or set {ENV_DATA_DIR}")
    data_dir = Path(data_dir)
    guard = guard if guard is not None else DevGuard.from_dir(data_dir)
    ext = load_external(data_dir, {r["source"] for r in labels})
    rows, missing, blocked = [], [], 0
    for lab in labels:
        src = ext.get((lab["source"], lab["source_id"]))
        if src is None:
            missing.append(f"{lab['_where']}: {lab['source']} {lab['source_id']}")
            continue
        if guard.blocks(src):
            blocked += 1
            continue
        rows.append({"text": clean_text(src), "label": lab["label"], "source": lab["source"],
                     "source_id": lab["source_id"], "weight": float(lab.get("weight", 1.0)),
                     "group": group_of(src), "origin": "hand" if lab["_where"].startswith("hand-") else "map"})
    if missing:
        shown = "; ".join(missing[:5])
        raise DataMissing(f"{len(missing)} labelled posts are not in {data_dir / 'external'} "
                          f"(wrong or older data directory?): {shown}{' ...' if len(missing) > 5 else ''}")
    return rows, {"labels": len(labels), "joined": len(rows), "blocked_as_dev": blocked}


def group_of(row: dict) -> str:
    """A key that keeps related posts (same user, thread or post) on one side of any split."""
    for key in ("user", "post_id", "thread_id", "reddit_id"):
        if row.get(key):
            return f"{row['source']}:{key}:{row[key]}"
    return f"{row['source']}:{row['source_id']}"


def read_dev(data_dir: Path) -> list[dict]:
    """The hand-labelled real-dev rows, each with `borderline` from its note."""
    out = []
    for path in sorted((Path(data_dir) / "real-dev").glob("*.jsonl")):
        for r in read_jsonl(path):
            r = dict(r)
            r["borderline"] = "borderline" in (r.get("note") or "").lower()
            out.append(r)
    if not out:
        raise DataMissing(f"no real-dev rows under {Path(data_dir) / 'real-dev'}")
    return out
