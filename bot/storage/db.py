"""Opening the SQLite database (WAL, foreign keys, private files) and applying numbered migrations."""
from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from importlib import resources
from pathlib import Path

import aiosqlite

log = logging.getLogger("caveat.storage")

#: How long one SQLite statement waits inside SQLite for another connection's lock. `Store.transaction()`
#: retries a BEGIN that still finds the database locked, within `Store.busy_budget_s`.
BUSY_TIMEOUT_MS = 5000

#: The database holds members' posts: only its owner may read it, the -wal and -shm files included.
PRIVATE_MODE = 0o600
SIDE_FILES = ("-wal", "-shm", "-journal")


class DatabaseBusy(sqlite3.OperationalError):
    """Another connection held the database's write lock for longer than the store waits; nothing was written.

    A subclass of `sqlite3.OperationalError` (what SQLite itself raises for "database is locked"), so callers that
    catch that keep working; the store is not left inside a transaction and the next write may simply retry.
    """


def is_busy(exc: BaseException) -> bool:
    """Is this SQLite's "database is locked" (SQLITE_BUSY: another connection holds the lock)?"""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF == getattr(sqlite3, "SQLITE_BUSY", 5)
    return "database is locked" in str(exc)


def default_db_path() -> Path | str:
    """`CAVEAT_DB` (a SQLite file, or a `postgresql://` URL kept as it is), else `caveat.db` under the user's data
    directory: `policies.settings.Settings.database_or_default()`."""
    from policies.settings import load_settings
    return load_settings().database_or_default()


def _migrations() -> list[tuple[int, str]]:
    """Migration files as (number, sql), in order."""
    folder = resources.files("bot.storage") / "migrations"
    out = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            out.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(out)


def _make_private(path: Path) -> None:
    """Create the database file 0600 if missing, and tighten it and its -wal/-shm files if they are wider.

    SQLite creates the -wal and -shm files with the database file's permissions (whatever the umask), so a 0600
    database keeps them 0600 too; files left by an older version (0644) are tightened here on every open.
    """
    # Never open (and close) a descriptor of an existing database: on POSIX, closing any descriptor of a file
    # drops every lock this process holds on it, those of a connection already open in this process included.
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
    except FileExistsError:
        pass
    for file in (path, *(Path(f"{path}{suffix}") for suffix in SIDE_FILES)):
        try:
            if file.stat().st_mode & 0o777 != PRIVATE_MODE:
                os.chmod(file, PRIVATE_MODE)
        except FileNotFoundError:
            continue
        except PermissionError:  # another user's file: say so, but still serve
            log.warning("cannot make %s private (mode 0600): not its owner", file)


async def checkpoint(conn: aiosqlite.Connection, *, wait_ms: int = 0) -> bool:
    """Copy the write-ahead log into the database and truncate it to zero bytes; True when that completed.

    Old page versions in the WAL (the text of a deleted post, say) are gone from every file only after this.
    It cannot complete while another connection reads an older snapshot (the reader may still read those pages)
    or writes; it then waits at most `wait_ms` and returns False, never raising for a busy database. It must not
    run inside a transaction of `conn`.
    """
    async def pragma(sql: str):
        async with conn.execute(sql) as cur:
            return await cur.fetchone()

    previous = (await pragma("PRAGMA busy_timeout"))[0]
    await pragma(f"PRAGMA busy_timeout={int(wait_ms)}")
    try:
        row = await pragma("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.OperationalError as exc:
        if not is_busy(exc):
            raise
        return False
    finally:
        await pragma(f"PRAGMA busy_timeout={int(previous)}")
    return row is not None and row[0] == 0


def _statements(sql: str) -> list[str]:
    """A migration script as single statements (a trigger's BEGIN ... END stays whole)."""
    out, buf = [], ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip() and not all(part.strip().startswith("--") for part in buf.strip().splitlines()):
        out.append(buf.strip())
    return out


async def _migrate(conn: aiosqlite.Connection) -> None:
    """Apply the pending migrations in one write transaction, re-reading what is applied under its lock, so two
    processes opening a new database at the same moment never both create the tables."""
    await conn.execute("BEGIN IMMEDIATE")
    try:
        async with conn.execute("SELECT version FROM schema_migrations") as cur:
            done = {row[0] for row in await cur.fetchall()}
        for number, sql in _migrations():
            if number in done:
                continue
            for statement in _statements(sql):
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_migrations VALUES (?, datetime('now'))", (number,))
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise


async def _wal(conn: aiosqlite.Connection, *, tries: int = 50) -> None:
    """Switch to WAL. On a new file that other processes open at the same moment, the switch can find the database
    locked without SQLite's busy handler waiting: retry it for a few seconds."""
    for attempt in range(tries):
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or attempt == tries - 1:
                raise
            await asyncio.sleep(0.02 * (attempt + 1))


async def open_db(path: str | os.PathLike) -> aiosqlite.Connection:
    """Open (creating if needed) and migrate the database at `path`; its files are private to the owner."""
    path = Path(path)
    memory = str(path) == ":memory:"
    if not memory:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # only a folder it creates is made 0700
        _make_private(path)
    # Autocommit mode: Store.transaction() issues BEGIN IMMEDIATE / COMMIT itself, nothing is implicit.
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        conn.row_factory = aiosqlite.Row
        await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        await _wal(conn)
        await conn.execute("PRAGMA foreign_keys=ON")
        # Health data: overwrite deleted content with zeros instead of leaving it in free pages.
        await conn.execute("PRAGMA secure_delete=ON")
        if not memory:
            _make_private(path)  # the -wal and -shm now exist
            # A deletion whose checkpoint could not finish before the last run ended (a reader held it back):
            # finish it now if nobody is in the way (never waits).
            await checkpoint(conn, wait_ms=0)
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                           " applied_at TEXT NOT NULL)")
        async with conn.execute("SELECT version FROM schema_migrations") as cur:
            done = {row[0] for row in await cur.fetchall()}
        if any(number not in done for number, _ in _migrations()):
            await _migrate(conn)
    except BaseException:
        await conn.close()
        raise
    return conn
