"""Opening the SQLite database (WAL, foreign keys) and applying numbered migrations."""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import aiosqlite


def default_db_path() -> Path:
    """`$CAVEAT_DB`, else `caveat.db` under the user's data directory (never the source tree)."""
    if os.environ.get("CAVEAT_DB"):
        return Path(os.environ["CAVEAT_DB"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "caveat" / "caveat.db"


def _migrations() -> list[tuple[int, str]]:
    """Migration files as (number, sql), in order."""
    folder = resources.files("bot.storage") / "migrations"
    out = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            out.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(out)


async def open_db(path: str | os.PathLike) -> aiosqlite.Connection:
    """Open (creating if needed) and migrate the database at `path`."""
    path = Path(path)
    if str(path) != ":memory:":
        path.parent.mkdir(parents=True, exist_ok=True)
    # Autocommit mode: Store.transaction() issues BEGIN IMMEDIATE / COMMIT itself, nothing is implicit.
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = aiosqlite.Row
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA foreign_keys=ON")
    await conn.execute("PRAGMA busy_timeout=5000")
    # Health data: overwrite deleted content with zeros instead of leaving it in free pages.
    await conn.execute("PRAGMA secure_delete=ON")
    await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    async with conn.execute("SELECT version FROM schema_migrations") as cur:
        done = {row[0] for row in await cur.fetchall()}
    for number, sql in _migrations():
        if number in done:
            continue
        await conn.executescript("BEGIN;\n" + sql + f"\nINSERT INTO schema_migrations VALUES ({number}, datetime('now'));\nCOMMIT;")
    return conn
