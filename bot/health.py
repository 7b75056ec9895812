"""Health checks: does the database open and answer with every migration applied, and does the model load?

`caveat health` (the container's HEALTHCHECK) runs them from outside the serving process: it opens the database
read-only (it never creates or migrates one) and loads the model the way serving does, then scores a fixed probe
sentence. `/healthz` (dashboard, and `caveat run --metrics-port`) runs the live versions on the process's own
store and scorer. Each problem is one line; no post text is ever read.
"""
from __future__ import annotations

import asyncio
import sqlite3
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.storage.contract import Health

PROBE = "caveat health check"


def expected_migrations() -> set[int]:
    """The numbers of the migrations this version of Caveat ships."""
    folder = resources.files("bot.storage") / "migrations"
    return {int(entry.name.split("_", 1)[0]) for entry in folder.iterdir() if entry.name.endswith(".sql")}


def migration_problem(applied: set[int], where: str) -> str | None:
    """Why the applied migrations do not match this version's, or None."""
    expected = expected_migrations()
    missing, unknown = sorted(expected - applied), sorted(applied - expected)
    if missing:
        return (f"database: {where}: migrations {', '.join(map(str, missing))} not applied"
                " (start `caveat run` or `caveat serve` once to apply them)")
    if unknown:
        return (f"database: {where}: migrated by a newer Caveat (migrations {', '.join(map(str, unknown))}"
                " unknown to this version)")
    return None


def check_db_file(path: str | Path) -> list[str]:
    """Problems with the database file at `path`, opened read-only (an empty list when it is healthy)."""
    path = Path(path).expanduser()
    if not path.exists():
        return [f"database: {path} does not exist (`caveat run` or `caveat serve` creates it on first start)"]
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=5)
        try:
            conn.execute("SELECT 1").fetchone()
            try:
                applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc):
                    raise
                return [f"database: {path}: not a Caveat database (no schema_migrations table)"]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return [f"database: {path}: {exc}"]
    problem = migration_problem(applied, str(path))
    return [problem] if problem else []


def check_model(model: str | None = None) -> tuple[list[str], str | None]:
    """Load the model as serving does and score the probe sentence: (problems, model version)."""
    try:
        from classifiers.serving import load_scorer
        scorer = load_scorer(model)
        result = scorer.predict([PROBE])
        if len(result) != 1 or not result[0]:
            return ["model: scoring the probe sentence returned nothing"], None
        version = scorer.version
        close = getattr(scorer, "close", None)
        if callable(close) and not asyncio.iscoroutinefunction(close):
            close()
        return [], version
    except Exception as exc:  # ModelUnavailable, a missing package, a broken export: all mean "not healthy"
        return [f"model: {' '.join(str(exc).split()) or type(exc).__name__}"], None


def check_db_url(url: str) -> list[str]:
    """Problems with the PostgreSQL database at `url`, in a read-only session (an empty list when healthy)."""
    from bot.storage.postgres import missing_driver, redact_url
    where = redact_url(url)
    try:
        import asyncpg
    except ImportError:
        return [f"database: {missing_driver()}"]

    async def read() -> set[int] | str:
        conn = await asyncpg.connect(url, timeout=10, server_settings={"default_transaction_read_only": "on"})
        try:
            if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
                return f"database: {where}: not a Caveat database (no schema_migrations table)"
            return {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        finally:
            await conn.close()
    try:
        applied = asyncio.run(read())
    except Exception as exc:
        return [f"database: {where}: {type(exc).__name__}: {' '.join(str(exc).split())}"]
    if isinstance(applied, str):
        return [applied]
    problem = migration_problem(applied, where)
    return [problem] if problem else []


async def check_store(store: Health) -> str | None:
    """The live store: a query answers and the migrations are applied (None when healthy)."""
    try:
        applied = await store.applied_migrations()
    except Exception as exc:
        return f"database: {type(exc).__name__}: {exc}"
    return migration_problem(applied, "the open database")


async def check_live(store: Health, scorer, *, timeout_s: float = 10.0) -> dict:
    """`/healthz`: {"ok", "database", "model"}; the model entry is its version, "rules-only", or the problem."""
    db_problem = await check_store(store)
    if scorer is None:
        model = "rules-only"
        model_ok = True
    else:
        try:
            await asyncio.wait_for(scorer.score(PROBE), timeout_s)
            model, model_ok = scorer.version, True
        except Exception as exc:
            model, model_ok = f"model: scoring failed ({type(exc).__name__})", False
    return {"ok": db_problem is None and model_ok, "database": db_problem or "ok", "model": model}


def main(args) -> int:
    """`caveat health`: exit 0 when healthy, else 1 with one line per problem on stderr."""
    problems: list[str] = []
    report: list[str] = []
    if not getattr(args, "no_db", False):
        from bot.storage import default_db_path
        from bot.storage.postgres import redact_url
        from bot.storage.store import is_postgres_url
        target = args.db or default_db_path()
        shown: str | Path
        if isinstance(target, str) and is_postgres_url(target):
            db_problems = check_db_url(target)
            shown = redact_url(target)
        else:
            shown = Path(target).expanduser()
            db_problems = check_db_file(shown)
        problems += db_problems
        if not db_problems:
            report.append(f"database {shown}")
    if getattr(args, "rules_only", False):
        report.append("keyword rules only (model not checked)")
    else:
        model_problems, version = check_model(getattr(args, "model", None))
        problems += model_problems
        if version:
            report.append(f"model {version}")
    if problems:
        for line in problems:
            print(f"caveat: unhealthy: {line}", file=sys.stderr)
        return 1
    print("ok: " + ", ".join(report))
    return 0
