"""Real-post labels: the join with text from a data directory, the real-dev guard and the missing-data errors.

Every text here is written for the test; no real post is copied into the repository.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from classifiers.realdata import DataMissing, DevGuard, join, read_labels

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def data_dir(tmp_path) -> Path:
    d = tmp_path / "data"
    write(d / "external" / "forum.jsonl", [
        {"source": "forum", "source_id": "forum:1", "text": "\ufeffI pinned my vials twice a day this week", "split": "none"},
        {"source": "forum", "source_id": "forum:2", "text": "Is this dose safe, should I ask my doctor first?", "split": "none"},
        {"source": "forum", "source_id": "forum:3", "text": "A post that is also in the dev set, word for word.", "split": "none"},
        {"source": "forum", "source_id": "forum:4", "text": "a post that is ALSO in the dev set -- word for word", "split": "none"},
    ])
    write(d / "external" / "crisis.jsonl", [
        {"source": "crisis", "source_id": "crisis:u-1:1", "user": "u-1", "text": "'first post of a thread", "split": "none"},
    ])
    write(d / "real-dev" / "part-a.jsonl", [
        {"id": "a-1", "source": "forum", "source_id": "forum:3", "text": "A post that is also in the dev set, word for word.",
         "label": "benign", "note": "a question; borderline"},
    ])
    return d


def test_join_attaches_text_weights_and_groups(tmp_path, data_dir):
    labels = read_labels([write(tmp_path / "l" / "hand-forum.jsonl", [
        {"source": "forum", "source_id": "forum:1", "label": "risky_self_treatment", "weight": 0.7, "note": "own dosing"},
        {"source": "forum", "source_id": "forum:2", "label": "benign"},
    ])])
    rows, counts = join(labels, data_dir)
    by_id = {r["source_id"]: r for r in rows}
    assert by_id["forum:1"]["text"] == "I pinned my vials twice a day this week"  # U+FEFF artefact removed
    assert by_id["forum:1"]["label"] == "risky_self_treatment" and by_id["forum:1"]["weight"] == 0.7
    assert by_id["forum:2"]["label"] == "benign" and by_id["forum:2"]["weight"] == 1.0
    assert counts == {"labels": 2, "joined": 2, "blocked_as_dev": 0}


def test_real_dev_rows_and_near_duplicates_never_join(tmp_path, data_dir):
    labels = read_labels([write(tmp_path / "l" / "map-forum.jsonl", [
        {"source": "forum", "source_id": "forum:3", "label": "benign"},
        {"source": "forum", "source_id": "forum:4", "label": "benign"},
        {"source": "forum", "source_id": "forum:2", "label": "benign"},
    ])])
    rows, counts = join(labels, data_dir)
    assert [r["source_id"] for r in rows] == ["forum:2"]
    assert counts["blocked_as_dev"] == 2


def test_hand_labels_override_mapped_labels(tmp_path):
    d = tmp_path / "l"
    write(d / "map-forum.jsonl", [{"source": "forum", "source_id": "forum:1", "label": "benign"}])
    write(d / "hand-forum.jsonl", [{"source": "forum", "source_id": "forum:1", "label": "risky_self_treatment"}])
    from classifiers.realdata import label_files
    labels = read_labels(label_files(d))
    assert [(r["source_id"], r["label"]) for r in labels] == [("forum:1", "risky_self_treatment")]


def test_missing_data_directory_says_what_to_pass(tmp_path):
    labels = read_labels([write(tmp_path / "l.jsonl", [{"source": "forum", "source_id": "forum:1", "label": "benign"}])])
    with pytest.raises(DataMissing, match="--data-dir"):
        join(labels, tmp_path / "nowhere")


def test_missing_source_file_and_missing_ids_are_named(tmp_path, data_dir):
    labels = read_labels([write(tmp_path / "l.jsonl", [{"source": "clinic", "source_id": "clinic:9", "label": "benign"}])])
    with pytest.raises(DataMissing, match=r"clinic\.jsonl: missing"):
        join(labels, data_dir)
    labels = read_labels([write(tmp_path / "m.jsonl", [{"source": "forum", "source_id": "forum:99", "label": "benign"}])])
    with pytest.raises(DataMissing, match=r"m\.jsonl:1: forum forum:99"):
        join(labels, data_dir)


def test_label_files_refuse_text_and_bad_labels(tmp_path):
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: label files carry no post text"):
        read_labels([write(tmp_path / "bad.jsonl", [{"source": "s", "source_id": "1", "label": "benign", "text": "x"}])])
    with pytest.raises(ValueError, match=r"worse\.jsonl:2: 'label' must be one of"):
        read_labels([write(tmp_path / "worse.jsonl", [{"source": "s", "source_id": "1", "label": "benign"},
                                                       {"source": "s", "source_id": "2", "label": "spam"}])])


def test_a_dev_users_whole_thread_is_kept_out(tmp_path, data_dir):
    write(data_dir / "real-dev" / "part-b.jsonl", [
        {"id": "b-1", "source": "cssrs_posts", "source_id": "batch.xlsx:u-1:2", "text": "another post", "label": "benign"}])
    write(data_dir / "external" / "cssrs_posts.jsonl", [
        {"source": "cssrs_posts", "source_id": "batch.xlsx:u-1:1", "user": "u-1", "text": "first post of a thread"},
        {"source": "cssrs_posts", "source_id": "batch.xlsx:u-2:1", "user": "u-2", "text": "someone else"}])
    guard = DevGuard.from_dir(data_dir)
    assert guard.users == frozenset({"u-1"})
    labels = read_labels([write(tmp_path / "c.jsonl", [
        {"source": "cssrs_posts", "source_id": "batch.xlsx:u-1:1", "label": "benign"},
        {"source": "cssrs_posts", "source_id": "batch.xlsx:u-2:1", "label": "benign"}])])
    rows, _ = join(labels, data_dir, guard=guard)
    assert [r["source_id"] for r in rows] == ["batch.xlsx:u-2:1"]


def test_shipped_label_files_hold_no_text_and_valid_labels():
    from classifiers.realdata import label_files
    files = label_files()
    assert any(f.name.startswith("hand-") for f in files) and any(f.name.startswith("map-") for f in files)
    labels = read_labels(files)  # raises on any text field or unknown label
    assert {r["label"] for r in labels} == {"benign", "emergency", "risky_self_treatment", "unsupported_claim", "promotion"}


def test_caveat_train_without_data_exits_2_and_names_the_flag(tmp_path):
    env = {"CAVEAT_DATA_DIR": str(tmp_path / "absent"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "bot.cli", "train", "--out", str(tmp_path / "m"), "--no-progress"],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    assert "--data-dir" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "m").exists()


def test_cross_validated_metrics_count_public_actions_and_queue_separately(policy):
    from classifiers.evaluate_real import metrics
    rows = [{"label": "risky_self_treatment"}, {"label": "benign"}, {"label": "benign"}, {"label": "emergency"}]
    none = {"emergency": "none", "risky_self_treatment": "none", "unsupported_claim": "none", "promotion": "none"}
    actions = [dict(none, risky_self_treatment="note_and_queue"), dict(none, risky_self_treatment="note_and_queue"),
               dict(none, unsupported_claim="queue"), dict(none, emergency="queue")]
    m = metrics(rows, actions)
    assert m["benign_public_rate"] == 0.5 and m["benign_any_rate"] == 1.0
    assert m["emergency_recall_any"] == 1.0 and m["emergency_recall_escalated"] == 0.0
    assert m["per_label"]["risky_self_treatment"]["public_precision"] == 0.5
    assert m["per_label"]["promotion"]["public_n"] == 0
