"""The storage suite runs against every backend (SQLite, PostgreSQL): see tests/conftest.py BACKENDS."""
import pytest

from pgcluster import BACKENDS


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param
