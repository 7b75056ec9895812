"""Shared fixtures: the shipped policy, a writable copy of it, and a fresh store on a temporary SQLite file."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from policies.loader import DEFAULT_POLICY_DIR, load_policy

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """Export the int8 serving model once per test run into a private cache (never the user's own cache)."""
    if not os.environ.get("CAVEAT_CACHE_DIR"):
        os.environ["CAVEAT_CACHE_DIR"] = tempfile.mkdtemp(prefix="caveat-test-cache-")


@pytest.fixture(scope="session")
def policy():
    """The shipped PolicySet."""
    return load_policy()


@pytest.fixture
def policy_dir(tmp_path) -> Path:
    """A writable copy of the shipped policy directory."""
    dst = tmp_path / "policies"
    shutil.copytree(DEFAULT_POLICY_DIR, dst, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return dst


@pytest.fixture
async def store(tmp_path):
    """A Store on a fresh SQLite file."""
    from bot.storage import Store
    s = await Store.open(tmp_path / "caveat.db")
    yield s
    await s.close()
