"""The shipped classifier: loads offline, documented output, batching invariance, runner, fallback, training smoke."""
from __future__ import annotations

import asyncio
import json
import os

import pytest

from policies.schema import LABELS

os.environ["HF_HUB_OFFLINE"] = "1"

TEXTS = [
    "Put the rapa cream right on the fresh surgical wound, it stops the scar",
    "Don't put rapamycin on a fresh surgical wound, it slows healing",
    "DM me, I sell sirolimus",
    "I can't do this anymore, the pills are lined up for tonight",
    "exosomes regrow hair 100%",
    "good morning, anyone tried the new oat milk?",
    "Two years ago I nearly ended it; therapy and my sister got me through. If you're struggling, 988 is open 24/7",
    "stop your metformin, berberine does the same thing",
]


@pytest.fixture(scope="module")
def clf():
    from classifiers.model import get_classifier
    return get_classifier()


def test_artifact_is_small_safetensors_with_metadata_and_a_model_card():
    from classifiers.model import CONFIG_NAME, DEFAULT_ARTIFACT, WEIGHTS_NAME
    files = {p.name: p.stat().st_size for p in DEFAULT_ARTIFACT.iterdir()}
    assert set(files) == {CONFIG_NAME, WEIGHTS_NAME, "combine.yaml", "MODEL_CARD.md"}
    assert sum(files.values()) <= 5 * 1024 * 1024
    cfg = json.loads((DEFAULT_ARTIFACT / CONFIG_NAME).read_text())
    assert cfg["labels"] == list(LABELS) and cfg["version"].startswith("caveat-minilm-") and cfg["data_hash"]


def test_model_card_credits_every_dataset_the_labels_use():
    from classifiers.credits import CREDITS
    from classifiers.model import DEFAULT_ARTIFACT
    from classifiers.realdata import label_files, read_labels
    card = (DEFAULT_ARTIFACT / "MODEL_CARD.md").read_text()
    used = {r["source"] for r in read_labels(label_files())}
    for source in used:
        assert f"**{source}**: {CREDITS[source]}" in card, source
    assert "no credit recorded" not in card


def test_shipped_combination_was_fitted_for_the_shipped_model(policy):
    from classifiers.model import DEFAULT_ARTIFACT
    cfg = json.loads((DEFAULT_ARTIFACT / "caveat_model.json").read_text())
    assert policy.combine.model_version == cfg["version"]
    assert set(policy.combine.labels) == set(LABELS)


def test_predict_returns_a_probability_per_label(clf):
    out = clf.predict(TEXTS[:2])
    assert len(out) == 2
    for row in out:
        assert set(row) == set(LABELS)
        assert all(0.0 <= v <= 1.0 for v in row.values())
    assert clf.predict("one text")[0].keys() == out[0].keys()


def test_model_tells_advice_from_warning(clf):
    advice, warning = clf.predict(TEXTS[:2])
    # The model is trained mostly on real posts, where rapamycin on wounds is rare; it still ranks the advice well
    # above the warning, and the curated rapa-wound rule makes sure of the note (tests/engine).
    assert advice["risky_self_treatment"] > 3 * warning["risky_self_treatment"]


def test_batched_scores_equal_one_by_one(clf):
    batched = clf.predict(TEXTS, batch_size=8)
    single = [clf.predict([t])[0] for t in TEXTS]
    for b, s in zip(batched, single):
        for label in LABELS:
            assert abs(b[label] - s[label]) < 1e-4


async def test_runner_batches_concurrent_requests_with_same_scores(clf):
    from classifiers.runner import ModelRunner
    calls = []

    class Spy:
        version = clf.version

        def predict(self, texts):
            calls.append(len(texts))
            return clf.predict(texts)

    runner = ModelRunner(Spy(), max_batch=16, max_wait_ms=20)
    try:
        results = await asyncio.gather(*(runner.score(t) for t in TEXTS))
    finally:
        await runner.close()
    assert sum(calls) == len(TEXTS) and len(calls) < len(TEXTS)  # at least some were scored together
    for r, t in zip(results, TEXTS):
        expected = clf.predict([t])[0]
        assert all(abs(r[lab] - expected[lab]) < 1e-4 for lab in LABELS)


async def test_model_failure_falls_back_to_rules_and_queue(store, policy):
    from bot.engine import Post
    from bot.pipeline import Pipeline
    from classifiers.runner import ModelRunner

    class Broken:
        version = "broken-1"

        def predict(self, texts):
            raise RuntimeError("out of memory")

    runner = ModelRunner(Broken())
    try:
        out = await Pipeline(store, policy, runner).handle(
            Post("t", "1", "c", "u", "Is it safe to put rapa cream on my surgical scar?"))
    finally:
        await runner.close()
    assert out.decision.mode == "fallback" and out.decision.action == "queue" and out.case_id


async def test_runner_timeout_falls_back(store, policy):
    import time
    from bot.engine import Post
    from bot.pipeline import Pipeline
    from classifiers.runner import ModelRunner

    class Slow:
        version = "slow-1"

        def predict(self, texts):
            time.sleep(0.5)
            return [{lab: 0.0 for lab in LABELS} for _ in texts]

    runner = ModelRunner(Slow(), timeout_s=0.05)
    try:
        out = await Pipeline(store, policy, runner).handle(Post("t", "2", "c", "u", "DM me, I sell sirolimus"))
    finally:
        await runner.close()
    assert out.decision.mode == "fallback" and out.decision.action in ("queue", "note_and_queue")


def test_missing_artifact_is_a_clear_error(tmp_path):
    from classifiers.model import Classifier, ModelUnavailable
    with pytest.raises(ModelUnavailable, match="caveat train"):
        Classifier(tmp_path)


def _tiny_data_dir(tmp_path):
    """A data directory shaped like the real one, holding the eight TEXTS (written for the tests) and their labels."""
    labels = ["risky_self_treatment", "benign", "promotion", "emergency", "unsupported_claim", "benign", "benign",
              "risky_self_treatment"]
    d = tmp_path / "data"
    (d / "external").mkdir(parents=True)
    (d / "external" / "forum.jsonl").write_text("".join(
        json.dumps({"source": "forum", "source_id": f"forum:{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    ld = tmp_path / "labels"
    ld.mkdir()
    (ld / "hand-forum.jsonl").write_text("".join(
        json.dumps({"source": "forum", "source_id": f"forum:{i}", "label": lab}) + "\n" for i, lab in enumerate(labels)))
    return labels, d, ld


def test_training_writes_a_servable_artifact_with_a_model_card(tmp_path):
    from classifiers.model import Classifier
    from classifiers.train import train
    labels, data, ld = _tiny_data_dir(tmp_path)
    result = train(tmp_path / "m", data_dir=data, label_dir=ld, inhouse=None, progress=False, calib_share=0.5)
    assert result["rows"] + result["calibration_rows"] == len(labels) and result["calibration_rows"] > 0
    trained = Classifier(tmp_path / "m")
    assert trained.version == result["version"]
    assert set(trained.predict("hello")[0]) == set(LABELS)
    card = (tmp_path / "m" / "MODEL_CARD.md").read_text()
    assert "forum" in card and "no credit recorded" in card  # an unknown dataset is flagged, never given a made-up citation
    assert (tmp_path / "m" / "combine.yaml").is_file()


def test_training_is_reproducible(tmp_path):
    from classifiers.train import train
    _, data, ld = _tiny_data_dir(tmp_path)
    a = train(tmp_path / "a", data_dir=data, label_dir=ld, inhouse=None, progress=False, calib_share=0.5)
    b = train(tmp_path / "b", data_dir=data, label_dir=ld, inhouse=None, progress=False, calib_share=0.5)
    assert a["version"] == b["version"]  # the version is a hash of the trained weights
