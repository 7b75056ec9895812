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


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL server for this test run (started only when a test asks for PostgreSQL)."""
    from pgcluster import PgCluster
    cluster = PgCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def backend() -> str:
    """The storage backend of a test: SQLite, except in the suites that run against both (their conftest)."""
    return "sqlite"


@pytest.fixture
def new_database(backend, tmp_path, request):
    """Makes fresh, empty databases of the test's backend: a SQLite file path, or a URL of a new PostgreSQL schema."""
    def make(name: str = "caveat.db"):
        if backend == "postgresql":
            return request.getfixturevalue("pg_cluster").new_url()
        return tmp_path / name
    return make


@pytest.fixture
def database(new_database):
    """Where the test's store lives (see `new_database`)."""
    return new_database()


@pytest.fixture
async def store(database):
    """A Store on a fresh database of the test's backend."""
    from bot.storage import Store
    s = await Store.open(database)
    yield s
    await s.close()
