"""One typed configuration (policies/settings.py): the variables README documents, their defaults, and a bad value
stopping `caveat` at start with one line naming the variable."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main
from policies.settings import RETIRED, Settings, SettingsError, env_name, load_settings

REPO = Path(__file__).resolve().parents[1]
VARIABLES = [env_name(f) for f in Settings.model_fields]


@pytest.fixture
def clean_env(monkeypatch):
    """No Caveat variable set, whatever the developer's shell exports."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_every_documented_variable_is_a_setting():
    assert VARIABLES == ["CAVEAT_DB", "CAVEAT_POLICY_DIR", "CAVEAT_MODEL_DIR", "CAVEAT_BASE_MODEL", "CAVEAT_BACKEND",
                         "CAVEAT_CACHE_DIR", "CAVEAT_DATA_DIR", "CAVEAT_THREADS", "CAVEAT_DASHBOARD_URL",
                         "DISCORD_TOKEN", "XDG_CACHE_HOME", "XDG_DATA_HOME"]
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    for name in VARIABLES:
        assert f"| `{name}` |" in section, f"README's configuration table lacks {name}"


def test_defaults(clean_env, tmp_path):
    clean_env.setenv("HOME", str(tmp_path))
    s = load_settings()
    assert s.backend == "onnx-int8" and s.db is None and s.policy_dir is None and s.discord_token is None
    assert s.thread_count() == max(1, min(4, os.cpu_count() or 1))
    assert s.cache_root() == tmp_path / ".cache" / "caveat"
    assert s.database_or_default() == tmp_path / ".local" / "share" / "caveat" / "caveat.db"
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert load_settings().cache_root() == tmp_path / "xdg" / "caveat"
    clean_env.setenv("CAVEAT_CACHE_DIR", "~/models")
    assert load_settings().cache_root() == tmp_path / "models"


def test_the_documented_names_are_read(clean_env, tmp_path):
    clean_env.setenv("CAVEAT_POLICY_DIR", str(tmp_path))
    clean_env.setenv("CAVEAT_THREADS", "3")
    clean_env.setenv("CAVEAT_BACKEND", "torch")
    clean_env.setenv("CAVEAT_DASHBOARD_URL", "https://caveat.example/")
    clean_env.setenv("CAVEAT_DATA_DIR", "")  # empty counts as unset
    s = load_settings()
    assert (s.policy_dir, s.thread_count(), s.backend) == (tmp_path, 3, "torch")
    assert s.dashboard_url == "https://caveat.example" and s.data_dir is None


def test_the_token_is_never_printed(clean_env):
    clean_env.setenv("DISCORD_TOKEN", "  MTIz.secret-token  ")
    s = load_settings()
    assert s.discord_token is not None and s.discord_token.get_secret_value() == "MTIz.secret-token"
    assert "secret-token" not in repr(s) + str(s) + s.model_dump_json()


def test_the_database_is_a_file_or_a_postgres_url_and_its_password_never_prints(clean_env, tmp_path):
    clean_env.setenv("HOME", str(tmp_path))
    clean_env.setenv("CAVEAT_DB", "~/caveat.db")
    assert load_settings().database() == tmp_path / "caveat.db"
    clean_env.setenv("CAVEAT_DB", "postgresql://caveat:hunter2@db.internal/caveat")
    s = load_settings()
    assert s.database() == "postgresql://caveat:hunter2@db.internal/caveat" and "hunter2" not in repr(s)
    clean_env.setenv("CAVEAT_DB", str(tmp_path))
    with pytest.raises(SettingsError, match="^CAVEAT_DB must be a database file or a postgresql:// URL, not a"
                                            " directory$"):
        load_settings()


@pytest.mark.parametrize("name, value, says", [
    ("CAVEAT_THREADS", "abc", "CAVEAT_THREADS must be a whole number, got 'abc'"),
    ("CAVEAT_THREADS", "-2", "CAVEAT_THREADS must be at least 1, got -2"),
    ("CAVEAT_POLICY_DIR", "/no/such/policies", "CAVEAT_POLICY_DIR must be an existing directory"),
    ("CAVEAT_BACKEND", "gpu", "CAVEAT_BACKEND must be one of onnx-int8, torch, got 'gpu'"),
    ("CAVEAT_DASHBOARD_URL", "caveat.example", "CAVEAT_DASHBOARD_URL must be an http:// or https:// address"),
])
def test_a_bad_value_stops_caveat_at_start_naming_the_variable(clean_env, capsys, name, value, says):
    clean_env.setenv(name, value)
    assert main(["check", "--rules-only", "hello"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 2 and lines[0] == "caveat: invalid configuration:" and lines[1].startswith(f"  {says}")


def test_every_bad_variable_is_named_once(clean_env, capsys):
    clean_env.setenv("CAVEAT_THREADS", "0")
    clean_env.setenv("CAVEAT_BACKEND", "cuda")
    with pytest.raises(SettingsError) as exc:
        load_settings()
    assert str(exc.value).splitlines() == ["CAVEAT_BACKEND must be one of onnx-int8, torch, got 'cuda'",
                                           "CAVEAT_THREADS must be at least 1, got 0"]


def test_the_console_script_gives_no_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bot.cli", "policy", "validate"], capture_output=True, text=True,
                         env={**os.environ, "CAVEAT_THREADS": "four"}, timeout=120, cwd=REPO)
    assert out.returncode == 2
    assert out.stderr == "caveat: invalid configuration:\n  CAVEAT_THREADS must be a whole number, got 'four'\n"


def test_caveat_commands_pick_up_the_policy_dir(clean_env, capsys, policy_dir):
    clean_env.setenv("CAVEAT_POLICY_DIR", str(policy_dir))
    assert main(["policy", "validate"]) == 0
    assert f"ok: {policy_dir}:" in capsys.readouterr().out
    (policy_dir / "rules.yaml").write_text("rules: [", encoding="utf-8")  # the copy is what `check` reads
    assert main(["check", "--rules-only", "hello"]) == 2
    assert "invalid policy" in capsys.readouterr().err


def test_caveat_run_reads_a_blank_token_as_unset(clean_env, capsys):
    clean_env.setenv("DISCORD_TOKEN", "   ")
    assert main(["run", "--rules-only"]) == 2
    assert "DISCORD_TOKEN is not set" in capsys.readouterr().err


def test_retired_variables_are_known(clean_env):
    from policies.settings import retired_variables
    for name in RETIRED:
        clean_env.delenv(name, raising=False)
    assert retired_variables() == []
    clean_env.setenv(RETIRED[0], "123")
    assert retired_variables() == [RETIRED[0]]


# Where the environment may be read directly: the settings module only.
ENV_READERS = {"policies/settings.py"}



def _is_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def _env_reads(path: Path):
    """Lines that read a variable: `os.getenv(...)`, `os.environ.get(...)`, `os.environ[...]`, `... in os.environ`.
    Writes for third-party libraries (`setdefault`, `update`, assignment) are not reads."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr == "getenv":
            yield node.lineno
        elif isinstance(node, ast.Attribute) and node.attr == "get" and _is_environ(node.value):
            yield node.lineno
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_environ(node.value):
            yield node.lineno
        elif isinstance(node, ast.Compare) and any(_is_environ(c) for c in node.comparators):
            yield node.lineno


def test_only_the_settings_module_reads_the_environment():
    bad = []
    for layer in ("bot", "classifiers", "policies"):
        for path in (REPO / layer).rglob("*.py"):
            rel = str(path.relative_to(REPO))
            if rel in ENV_READERS:
                continue
            bad.extend(f"{rel}:{line}" for line in _env_reads(path))
    assert not bad, bad
