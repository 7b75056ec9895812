"""Shared fixtures: the shipped policy, a writable copy of it, and a fresh store on a temporary SQLite file."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from policies.loader import DEFAULT_POLICY_DIR, load_policy

REPO = Path(__file__).resolve().parents[1]


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
