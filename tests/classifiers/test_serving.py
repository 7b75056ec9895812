"""The int8 serving path: exported once into the cache, loaded without torch, same decisions as the fp32 model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from policies.schema import LABELS

TEXTS = [
    "Put the rapa cream right on the fresh surgical wound, it stops the scar",
    "Don't put rapamycin on a fresh surgical wound, it slows healing",
    "DM me, I sell sirolimus, no script needed",
    "the pills are lined up for tonight and I'm done",
    "these exosomes regrow hair 100%, guaranteed",
    "anyone watching the match tonight?",
]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def int8():
    from classifiers.serving import get_scorer
    return get_scorer(backend="onnx-int8")


def test_int8_scorer_is_cached_and_returns_the_documented_schema(int8):
    from classifiers.serving import artifact_path, base_model_path, cache_root, export_key, read_config
    assert int8.backend == "onnx-int8" and int8.labels == list(LABELS)
    assert int8.version == read_config(artifact_path())["version"]
    folder = cache_root() / "onnx" / export_key(artifact_path(), base_model_path())
    manifest = json.loads((folder / "serving.json").read_text())
    assert manifest["version"] == int8.version and (folder / "model.int8.onnx").is_file()
    for row in int8.predict(TEXTS):
        assert set(row) == set(LABELS) and all(0.0 <= v <= 1.0 for v in row.values())


def test_a_posts_score_does_not_depend_on_the_other_posts_scored_with_it(int8):
    together = int8.predict(TEXTS * 5)
    alone = [int8.predict([t])[0] for t in TEXTS]
    assert together[:len(TEXTS)] == alone and together[-len(TEXTS):] == alone
    assert int8.predict_serial(TEXTS) == alone


def test_int8_gives_the_same_decisions_as_fp32(int8, policy):
    """Quantization must not change what members see: compare acting labels under the shipped thresholds."""
    from bot.engine import Engine, Post
    from classifiers.model import get_classifier
    rows = [json.loads(line) for line in (REPO / "classifiers/data/dev.jsonl").read_text().splitlines()][:300]
    texts = TEXTS + [r["text"] for r in rows]
    engine = Engine(policy)
    inputs = [engine.model_input(t) for t in texts]
    ref = get_classifier().predict(inputs, batch_size=32)
    got = int8.predict(inputs)

    def seen(text, scores):  # what members see: a caution note (which one) or a crisis reply, or nothing
        d = engine.assess(Post("t", "1", "c", "u", text), scores, model_version="m")
        return d.action in ("note", "note_and_queue", "escalate"), d.action == "escalate", d.note.id if d.note else None

    same = sum(seen(t, a) == seen(t, b) for t, a, b in zip(texts, ref, got))
    # Queue decisions differ more (12 of 306 for the shipped model: its queue thresholds sit where scores are dense);
    # benchmarks/RESULTS.md reports both.
    assert same / len(texts) >= 0.99
    advice, warning = got[:2]
    assert advice["risky_self_treatment"] > 3 * warning["risky_self_treatment"]


def test_a_later_start_loads_the_cache_without_torch(int8):
    code = ("import sys; from classifiers.serving import get_scorer; s = get_scorer(); "
            "print(s.backend, round(s.predict(['DM me, I sell sirolimus'])[0]['promotion'], 3), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=os.environ.copy(),
                         timeout=120)
    assert out.returncode == 0, out.stderr
    backend, promotion, torch_loaded = out.stdout.split()
    assert backend == "onnx-int8" and float(promotion) > 0.5 and torch_loaded == "False"
    assert "preparing the int8 serving model" not in out.stderr


def test_unknown_backend_is_a_clear_error(monkeypatch):
    from classifiers.serving import load_scorer
    from policies.settings import SettingsError
    monkeypatch.setenv("CAVEAT_BACKEND", "gpu")
    with pytest.raises(SettingsError, match="CAVEAT_BACKEND must be one of onnx-int8, torch, got 'gpu'"):
        load_scorer()


def test_bad_thread_setting_is_a_clear_error(monkeypatch):
    from classifiers.serving import default_threads
    from policies.settings import SettingsError
    monkeypatch.setenv("CAVEAT_THREADS", "two")
    with pytest.raises(SettingsError, match="CAVEAT_THREADS must be a whole number, got 'two'"):
        default_threads()


async def test_runner_workers_score_a_lone_post_at_once_and_share_a_backlog():
    import threading
    import time
    from classifiers.runner import ModelRunner

    calls: list[tuple[str, int]] = []

    class Slow:
        version = "slow-2"
        threads = 2

        def predict(self, texts):
            raise AssertionError("the runner uses predict_serial when the scorer has one")

        def predict_serial(self, texts):
            calls.append((threading.current_thread().name, len(texts)))
            time.sleep(0.05)
            return [{lab: 0.0 for lab in LABELS} for _ in texts]

    runner = ModelRunner(Slow())
    try:
        assert await runner.score("one") == {lab: 0.0 for lab in LABELS}
        assert calls == [(calls[0][0], 1)]
        calls.clear()
        await __import__("asyncio").gather(*(runner.score(f"post {i}") for i in range(20)))
    finally:
        await runner.close()
    assert sum(n for _, n in calls) == 20 and len(calls) < 20      # the backlog was taken in groups
    assert len({name for name, _ in calls}) == 2                    # by both workers
