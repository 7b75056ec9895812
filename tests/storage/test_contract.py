"""The storage contract (bot/storage/contract.py): both backends implement every Protocol member with the same
signature, the rest of Caveat calls nothing on a store outside it, and nothing outside bot/storage writes SQL.

mypy checks the same contract statically (`Store` and `PostgresStore` are assigned to `Storage` in contract.py);
it ignores parameter names, which the signatures compared here include.
"""
from __future__ import annotations

import ast
import inspect
import re
import typing
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from bot.health import expected_migrations
from bot.storage import contract
from bot.storage.postgres import PostgresStore
from bot.storage.store import Store

REPO = Path(__file__).resolve().parents[2]
BACKENDS = {"sqlite": Store, "postgresql": PostgresStore}
PROTOCOLS = [obj for _, obj in sorted(vars(contract).items())
             if isinstance(obj, type) and typing.Protocol in obj.__mro__ and obj.__module__ == contract.__name__]


def _own_members(proto: type) -> list[str]:
    """The methods a Protocol declares itself (its bases' are checked with the bases)."""
    return sorted(name for name, value in vars(proto).items()
                  if not name.startswith("_") and inspect.isfunction(value))


def _all_members(proto: type) -> set[str]:
    return {name for cls in proto.__mro__ if cls in PROTOCOLS for name in _own_members(cls)}


MEMBERS = [(proto, name) for proto in PROTOCOLS for name in _own_members(proto)]


def test_every_aggregate_is_in_storage():
    assert contract.Storage in PROTOCOLS
    assert set(PROTOCOLS) <= set(contract.Storage.__mro__)
    assert len(MEMBERS) == len({name for _, name in MEMBERS}), "a member is declared by two Protocols"


@pytest.mark.parametrize("impl", BACKENDS.values(), ids=BACKENDS.keys())
@pytest.mark.parametrize("proto,name", MEMBERS, ids=[f"{p.__name__}.{n}" for p, n in MEMBERS])
def test_both_backends_implement_the_member_with_its_signature(proto, name, impl):
    declared = getattr(proto, name)
    actual = getattr(impl, name, None)
    assert actual is not None, f"{impl.__name__} has no {name}()"
    assert inspect.iscoroutinefunction(actual) == inspect.iscoroutinefunction(declared), \
        f"{impl.__name__}.{name} and {proto.__name__}.{name} differ in being async"
    want = inspect.signature(declared, eval_str=True)
    got = inspect.signature(actual, eval_str=True)
    if got.return_annotation is inspect.Signature.empty and inspect.isasyncgenfunction(inspect.unwrap(actual)):
        # An @asynccontextmanager generator (transaction()): the signature is the generator's, the call returns
        # the context manager.
        assert typing.get_origin(want.return_annotation) is AbstractAsyncContextManager
        got = got.replace(return_annotation=want.return_annotation)
    assert got == want, f"{impl.__name__}.{name}{got} differs from {proto.__name__}.{name}{want}"


# -- what the rest of Caveat calls ---------------------------------------------------------------------------
#: `store.x(...)`, `self.store.x(...)`, `auth.store.x(...)`, `request.app[STORE].x(...)`.
_STORE_CALL = re.compile(r"(?:\bstore|\[STORE\])\.(\w+)\(")


def _python_files(*tops: str):
    for top in tops:
        for path in sorted((REPO / top).rglob("*.py")):
            if "bot/storage" not in path.relative_to(REPO).as_posix():
                yield path


def test_the_rest_of_caveat_calls_only_contract_members_on_a_store():
    allowed = _all_members(contract.Storage)
    outside = {f"{path.relative_to(REPO)}: store.{name}()"
               for path in _python_files("bot") for name in _STORE_CALL.findall(path.read_text(encoding="utf-8"))
               if name not in allowed}
    assert not outside, sorted(outside)


async def test_applied_migrations_are_this_versions(store):
    """The live health probe's query, on both backends (tests/storage/conftest.py)."""
    assert await store.applied_migrations() == expected_migrations()


# -- nothing outside bot/storage writes SQL ------------------------------------------------------------------
_SQL = re.compile(r"\b(SELECT\s+\S|INSERT\s+(OR\s+\w+\s+)?INTO\b|UPDATE\s+\w+\s+SET\b|DELETE\s+FROM\b|"
                  r"CREATE\s+(TABLE|INDEX)\b|DROP\s+TABLE\b|PRAGMA\s+\w)")
#: Database drivers' calls (sqlite3, aiosqlite, asyncpg), and the store's own primitives called on a store.
_DB_CALLS = {"execute", "executemany", "executescript", "fetch", "fetchrow", "fetchval"}
_STORE_PRIMITIVES = {"_one", "_all", "_exec", "_write", "_count"}
#: `caveat health` opens the database itself, read-only, without a store (it must never create or migrate one).
EXCEPTIONS = {("bot/health.py", "check_db_file"), ("bot/health.py", "check_db_url")}


def _functions_by_line(tree: ast.AST) -> dict[int, str]:
    where: dict[int, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.col_offset == 0:
            for line in range(node.lineno, (node.end_lineno or node.lineno) + 1):
                where[line] = node.name
    return where


def test_nothing_outside_storage_writes_sql():
    found = []
    for path in _python_files("bot", "classifiers", "policies"):
        rel = path.relative_to(REPO).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        function = _functions_by_line(tree)
        for node in ast.walk(tree):
            what = None
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _SQL.search(node.value):
                what = f"SQL {node.value[:60]!r}"
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
                    node.func.attr in _DB_CALLS or node.func.attr in _STORE_PRIMITIVES
                    and re.search(r"store\b|STORE", ast.unparse(node.func.value))):
                what = f"a database call {ast.unparse(node.func)}()"
            if what and (rel, function.get(node.lineno)) not in EXCEPTIONS:
                found.append(f"{rel}:{node.lineno}: {what}")
    assert not found, found


def test_the_scan_finds_sql():
    """The scan above is not vacuous: it sees the health probes it excuses, and a query in an f-string."""
    tree = ast.parse('async def f(store, t):\n    await store._one(f"SELECT * FROM {t} WHERE id=?", (1,))\n')
    constants = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert any(_SQL.search(c) for c in constants)
    health = ast.parse((REPO / "bot" / "health.py").read_text(encoding="utf-8"))
    assert sum(1 for n in ast.walk(health) if isinstance(n, ast.Constant) and isinstance(n.value, str)
               and _SQL.search(n.value)) >= 2
