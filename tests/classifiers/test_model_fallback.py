"""A damaged model never crashes `caveat check`, `run` or `serve`: a truncated or garbage adapter, a broken config or
tokenizer, a damaged serving cache. The cache is deleted and rebuilt once; anything else (or a failed rebuild)
falls back to the keyword rules with one warning line, and the crisis lane still works."""
from __future__ import annotations

import os
import shutil
from argparse import Namespace
from pathlib import Path

import pytest

from bot.cli import main
from classifiers import serving
from classifiers.serving import ModelUnavailable, artifact_path, base_model_path, cache_root, export_key, prepare_onnx

CRISIS = "I want to kill myself tonight"


@pytest.fixture(autouse=True)
def no_loaded_scorer(monkeypatch):
    """No process-wide scorer loaded by an earlier test: each test loads from the files it set up."""
    monkeypatch.setattr(serving, "_CACHE", {})


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    """An empty serving cache: the model must be exported from the artifact (which reads its files)."""
    path = tmp_path / "empty-cache"
    monkeypatch.setenv("CAVEAT_CACHE_DIR", str(path))
    return path


@pytest.fixture
def cache_copy(tmp_path, monkeypatch) -> Path:
    """A private copy of this test run's exported int8 model (exported once per run), in its own cache root;
    returns the export folder, which the test may damage."""
    folder = prepare_onnx(quiet=True)
    root = tmp_path / "cache"
    dst = root / "onnx" / folder.name
    shutil.copytree(folder, dst)
    monkeypatch.setenv("CAVEAT_CACHE_DIR", str(root))
    assert cache_root() / "onnx" / export_key(artifact_path(), base_model_path()) == dst
    return dst


def _damage(path: Path, how: str) -> None:
    if how == "truncate":
        with path.open("r+b") as fh:
            fh.truncate(path.stat().st_size // 3)
    elif how == "garbage":
        path.write_bytes(os.urandom(4096))
    elif how == "missing":
        path.unlink()
    else:
        raise AssertionError(how)


def _check(capsys, *args: str) -> tuple[int, str, list[str]]:
    code = main(["check", *args, CRISIS])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("caveat: policy warning")]
    return code, out, lines


def _assert_rules_verdict(out: str) -> None:
    assert "Action:  escalate" in out and "Crisis resources:" in out
    assert "Versions: model rules-only" in out


@pytest.mark.parametrize("name,how,says", [
    ("adapter.safetensors", "truncate", "adapter.safetensors is damaged"),
    ("adapter.safetensors", "garbage", "adapter.safetensors is damaged"),
    ("adapter.safetensors", "missing", "adapter.safetensors is missing"),
    ("caveat_model.json", "garbage", "caveat_model.json is unreadable"),
])
def test_a_damaged_artifact_falls_back_to_rules_with_one_warning(tmp_path, empty_cache, capsys, name, how, says):
    model = tmp_path / "model"
    shutil.copytree(artifact_path(), model)
    _damage(model / name, how)
    code, out, err = _check(capsys, "--model", str(model))
    assert code == 0
    assert len(err) == 1, err
    assert err[0].startswith("caveat: model unavailable (") and err[0].endswith("using keyword rules only")
    assert says in err[0] and str(model) in err[0]
    if name == "adapter.safetensors":
        assert "run `caveat train`" in err[0]   # says what to do
    _assert_rules_verdict(out)
    assert not list(empty_cache.glob("onnx/*/serving.json"))  # nothing half-built was left as a cache


def test_a_broken_base_tokenizer_falls_back_to_rules(tmp_path, empty_cache, monkeypatch, capsys):
    real = Path(base_model_path())
    base = tmp_path / "base"
    base.mkdir()
    for item in real.iterdir():
        (base / item.name).symlink_to(item)
    (base / "tokenizer.json").unlink()
    (base / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "WordPi')  # cut off mid-file
    monkeypatch.setenv("CAVEAT_BASE_MODEL", str(base))
    code, out, err = _check(capsys)
    assert code == 0 and len(err) == 1, err
    assert f"{base / 'tokenizer.json'} is damaged" in err[0] and err[0].endswith("using keyword rules only")
    _assert_rules_verdict(out)


def test_a_truncated_cache_is_rebuilt_once_and_the_model_is_used(cache_copy, capsys):
    good_size = (cache_copy / "model.int8.onnx").stat().st_size
    _damage(cache_copy / "model.int8.onnx", "truncate")
    code, out, err = _check(capsys)
    assert code == 0
    assert len(err) == 1, err
    assert err[0].startswith(f"caveat: the cached int8 serving model in {cache_copy} cannot be loaded (")
    assert err[0].endswith("; rebuilding it once")
    assert "Versions: model caveat-minilm-" in out and "Action:  escalate" in out
    assert (cache_copy / "model.int8.onnx").stat().st_size == good_size
    # The next start loads the rebuilt cache without a word.
    serving._CACHE.clear()
    code, out, err = _check(capsys)
    assert code == 0 and err == [] and "Versions: model caveat-minilm-" in out


@pytest.mark.parametrize("name,how", [("tokenizer.json", "garbage"), ("model.int8.onnx", "missing"),
                                      ("model.int8.onnx", "garbage"), ("serving.json", "truncate")])
def test_a_damaged_cache_that_cannot_be_rebuilt_falls_back_to_rules(cache_copy, monkeypatch, capsys, name, how):
    def export_fails(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("classifiers.export.export", export_fails)
    _damage(cache_copy / name, how)
    code, out, err = _check(capsys)
    assert code == 0
    assert len(err) == 2, err
    assert err[0].startswith("caveat: the cached int8 serving model in ") and err[0].endswith("rebuilding it once")
    assert err[1].startswith("caveat: model unavailable (the cached int8 serving model was damaged (")
    assert "rebuilding it failed" in err[1] and "No space left on device" in err[1]
    assert err[1].endswith("using keyword rules only")
    _assert_rules_verdict(out)


def test_serve_and_run_start_with_rules_only_and_one_warning(tmp_path, empty_cache, capsys):
    from bot.client import _load_scorer as run_scorer
    from bot.web.app import _load_scorer as serve_scorer
    model = tmp_path / "model"
    shutil.copytree(artifact_path(), model)
    _damage(model / "adapter.safetensors", "truncate")
    args = Namespace(rules_only=False, model=str(model))
    for load in (run_scorer, serve_scorer):
        assert load(args) is None
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "adapter.safetensors is damaged" in err[0] and "keyword rules only" in err[0]


def test_model_unavailable_is_always_one_line():
    assert str(ModelUnavailable("cannot load\n  because\tof this")) == "cannot load because of this"


def test_onnx_runtime_telemetry_is_switched_off_when_the_model_loads(monkeypatch):
    import onnxruntime

    from classifiers import serving
    calls = []
    monkeypatch.setattr(onnxruntime, "disable_telemetry_events", lambda: calls.append(True))
    try:
        serving.OnnxClassifier(Path("/nonexistent"))
    except Exception:
        pass  # the folder does not exist; telemetry is switched off before anything is read
    assert calls == [True]
