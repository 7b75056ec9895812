"""`PostgresStore`: the same `Store`, on PostgreSQL through asyncpg, for several Caveat processes on one database.

Selected by `CAVEAT_DB=postgresql://user:password@host:port/database` (or `--db` with such a URL). The store
methods are shared with SQLite (`bot.storage.store.Store` and its mixins): their SQL is written once, in the
common subset of both dialects, with `?` placeholders. This module translates it (`?` to `$n`; `INSERT OR
IGNORE` to `ON CONFLICT DO NOTHING`; `RETURNING id` for the new row's id) and keeps SQLite's write semantics
across processes:

- Every write transaction first takes transaction-scoped advisory locks (`pg_advisory_xact_lock`): a post's
  transaction (all its writes belong to one community) the schema's lock shared and its community's lock
  exclusively; any other write transaction the schema's lock exclusively. So the writes a transaction's checks
  depend on (is this post already decided? may a note go out, or is this member's cooldown running? is this case
  already claimed?) are made one at a time across all processes, as SQLite's `BEGIN IMMEDIATE` makes every write,
  while different communities' posts are stored in parallel. Reads outside transactions take no lock.
- Each task's transaction runs on its own pooled connection; several tasks of one process wait for the lock
  in PostgreSQL, not in process memory.
- A lock wait longer than `busy_budget_s` raises `DatabaseBusy`, like a SQLite database locked for too long.
- Migrations come from `migrations/postgres/` with the same numbers as SQLite's, applied under a session
  advisory lock so two processes starting together never both migrate.
- After a commit that removed members' text, `VACUUM` prunes the old row versions so no query can see them; but
  PostgreSQL does not zero the space they held, so the text stays in the table files until they are rewritten:
  `compact()` (run by `caveat purge`) does that with `VACUUM FULL`. The WAL, replicas and backups keep older copies
  until they are recycled: that is the operator's retention to set.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bot.storage.db import DatabaseBusy
from bot.storage.store import Result, Store

log = logging.getLogger("caveat.storage")

#: Tables whose rows have a generated `id` (an INSERT into them returns it, like SQLite's lastrowid).
ID_TABLES = frozenset({"posts", "decisions", "cases", "audit", "cooldowns", "feedback", "platform_actions",
                       "policy_events"})

#: Tables that hold members' text; vacuumed after a commit that removed some.
TEXT_TABLES = ("posts", "decisions", "feedback")

_INSERT = re.compile(r"^\s*INSERT\s+(OR\s+IGNORE\s+)?INTO\s+(\w+)", re.IGNORECASE)


def missing_driver() -> RuntimeError:
    return RuntimeError("CAVEAT_DB names a PostgreSQL database, but the PostgreSQL driver is not installed:"
                        " pip install 'caveat[postgres]' (asyncpg)")


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> tuple[str, bool]:
    """SQLite-flavoured SQL as written in the store, in PostgreSQL's dialect; and does it return a new row's id?

    `?` placeholders outside string literals become `$1, $2, ...`; `INSERT OR IGNORE INTO t ...` becomes
    `INSERT INTO t ... ON CONFLICT DO NOTHING`; an INSERT into a table with a generated id gets `RETURNING id`.
    """
    out, n, quoted = [], 0, False
    for ch in sql:
        if ch == "'":
            quoted = not quoted
        if ch == "?" and not quoted:
            n += 1
            out.append(f"${n}")
        else:
            out.append(ch)
    text = "".join(out)
    returns_id = False
    m = _INSERT.match(text)
    if m:
        if m.group(1):
            text = text[:m.start(1)] + text[m.end(1):] + " ON CONFLICT DO NOTHING"
        if m.group(2).lower() in ID_TABLES and "RETURNING" not in text.upper():
            text += " RETURNING id"
            returns_id = True
    return text, returns_id


def redact_url(url: str) -> str:
    """The URL without its passwords (in the address or as `password=`/`sslpassword=` parameters), for messages."""
    parts = urlsplit(url)
    if parts.password is not None:
        user, host = parts.netloc.rsplit("@", 1)
        parts = parts._replace(netloc=user.split(":", 1)[0] + ":***@" + host)
    if parts.query:
        query = [(k, "***" if k.lower() in ("password", "sslpassword") else v)
                 for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        parts = parts._replace(query=urlencode(query, safe="*"))
    return urlunsplit(parts)


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("bot.storage") / "migrations" / "postgres"
    return sorted((int(e.name.split("_", 1)[0]), e.read_text(encoding="utf-8"))
                  for e in folder.iterdir() if e.name.endswith(".sql"))


def _rowcount(status: str) -> int:
    """Rows touched, from a command status such as 'UPDATE 3' or 'INSERT 0 1'."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class PostgresStore(Store):
    """All persistent state of Caveat in one PostgreSQL database (schema), shared by many processes."""

    dialect = "postgresql"
    #: Connections per process: one per concurrent transaction or read.
    pool_max = 10
    #: A transaction of one community locks only that community (False: every write transaction is exclusive, as on
    #: SQLite; `benchmarks/multiprocess.py --global-lock` compares the two).
    community_locks = True

    def __init__(self, pool, url: str):  # noqa: D107 - no SQLite connection here
        self.pool = pool
        self.url = url
        self._tx: dict[asyncio.Task | None, Any] = {}
        self._scrub_tasks: set[asyncio.Task | None] = set()
        self._vacuum_lock = asyncio.Lock()

    @property
    def conn(self):
        raise AttributeError("PostgresStore has no single connection; use the store's methods")

    @classmethod
    async def open(cls, target) -> "PostgresStore":
        """Connect to the PostgreSQL database at `target` (a postgresql:// URL) and migrate it."""
        try:
            import asyncpg
        except ImportError:
            raise missing_driver() from None
        url = str(target)
        try:
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=cls.pool_max,
                server_settings={"lock_timeout": f"{int(cls.busy_budget_s * 1000)}ms",
                                 "application_name": "caveat"})
        except (OSError, asyncpg.PostgresError) as exc:
            raise ConnectionError(f"cannot connect to PostgreSQL at {redact_url(url)}: {exc}") from exc
        store = cls(pool, url)
        try:
            await store._migrate()
        except BaseException:
            await pool.close()
            raise
        return store

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.pool.close()

    async def _migrate(self) -> None:
        async with self.pool.acquire() as conn:
            # One process migrates at a time (two bot shards starting together).
            await conn.execute("SELECT pg_advisory_lock(hashtext('caveat.migrate.' || current_schema()))")
            try:
                await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                                   " applied_at TEXT NOT NULL)")
                done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
                for number, sql in _migrations():
                    if number in done:
                        continue
                    async with conn.transaction():
                        await conn.execute(sql)
                        await conn.execute("INSERT INTO schema_migrations VALUES ($1, $2)", number,
                                           datetime.now(timezone.utc).isoformat(timespec="seconds"))
                    log.info("applied PostgreSQL migration %03d", number)
            finally:
                await conn.execute("SELECT pg_advisory_unlock(hashtext('caveat.migrate.' || current_schema()))")

    @contextlib.asynccontextmanager
    async def transaction(self, *, community: str | None = None):
        """One atomic unit of work on this task's own connection, after the schema's write lock.

        The lock: exclusive for a transaction that may write anything; for one whose writes all belong to one
        `community` (a post with its decision, case, reply and cooldown), shared, plus that community's own
        exclusive lock. Transactions of different communities then run at the same time, while everything a
        community's transaction checks (its cooldowns, its cases) is still written by one transaction at a time.
        Nested use by the same task joins the outer transaction. Commit on success, rollback on any error or
        cancellation. A lock wait past `busy_budget_s` raises `DatabaseBusy` with nothing written.
        """
        import asyncpg

        task = asyncio.current_task()
        if task in self._tx:
            yield self
            return
        scrub = False
        async with self.pool.acquire() as conn:
            self._tx[task] = conn
            try:
                # READ COMMITTED whatever the server's default: after the lock, each statement sees every write
                # committed before (the cooldown and duplicate checks rely on it).
                async with conn.transaction(isolation="read_committed"):
                    try:
                        if community is None or not self.community_locks:
                            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('caveat.write.' ||"
                                               " current_schema()))")
                        else:  # shared first, then the community's: the same order everywhere, no deadlock
                            await conn.execute("SELECT pg_advisory_xact_lock_shared(hashtext('caveat.write.' ||"
                                               " current_schema())), pg_advisory_xact_lock(hashtext("
                                               "'caveat.write.' || current_schema() || '/' || $1))", community)
                    except asyncpg.LockNotAvailableError as exc:
                        raise DatabaseBusy(f"database is locked: another process held Caveat's write lock for"
                                           f" more than {self.busy_budget_s:g} s; nothing was written") from exc
                    yield self
                scrub = task in self._scrub_tasks
            finally:
                self._scrub_tasks.discard(task)
                del self._tx[task]
        if scrub:
            await self._scrub()

    def _in_transaction(self) -> bool:
        return asyncio.current_task() in self._tx

    def _mark_scrub(self) -> None:
        self._scrub_tasks.add(asyncio.current_task())

    @property
    def scrub_pending(self) -> bool:
        return self._vacuum_lock.locked()

    async def compact(self) -> None:
        """Rewrite the tables that hold members' text (`VACUUM FULL`): removed text is then gone from their files.
        Takes each table's exclusive lock while it is rewritten (seconds for a large table): run it off-peak."""
        async with self._vacuum_lock, self.pool.acquire() as conn:
            await conn.execute("VACUUM FULL " + ", ".join(TEXT_TABLES))

    async def _scrub(self) -> bool:
        """VACUUM the tables that held removed text, so no query can see its old row versions. Never raises."""
        try:
            async with self._vacuum_lock, self.pool.acquire() as conn:
                await conn.execute("VACUUM " + ", ".join(TEXT_TABLES))
            return True
        except Exception as exc:
            log.warning("VACUUM after a deletion failed (%s); the next one prunes the old rows",
                        type(exc).__name__)
            return False

    async def _notify_policy(self, version: str) -> None:
        # Delivered at commit to every listening connection of this database; a listener re-reads its own schema.
        await self._exec("SELECT pg_notify('caveat_policy', ?)", (version,))

    async def listen_policy(self, callback: Callable[[], object]) -> Callable[[], Awaitable[None]] | None:
        """LISTEN on a dedicated connection; `callback()` runs on each publication. Returns an async stop()."""
        import asyncpg

        conn = await asyncpg.connect(self.url)
        await conn.add_listener("caveat_policy", lambda *_: callback())
        # A lost connection (PostgreSQL restarted) wakes the follower, which checks and listens again.
        conn.add_termination_listener(lambda *_: callback())

        async def stop() -> None:
            try:
                await conn.close()
            except Exception:  # already gone with the server
                pass
        stop.alive = lambda: not conn.is_closed()  # type: ignore[attr-defined]
        return stop

    @contextlib.asynccontextmanager
    async def _connection(self):
        conn = self._tx.get(asyncio.current_task())
        if conn is not None:
            yield conn
        else:
            async with self.pool.acquire() as conn:
                yield conn

    async def _one(self, sql: str, args: tuple = ()):
        text, _ = translate(sql)
        async with self._connection() as conn:
            return await conn.fetchrow(text, *args)

    async def _all(self, sql: str, args: tuple = ()):
        text, _ = translate(sql)
        async with self._connection() as conn:
            return list(await conn.fetch(text, *args))

    async def _exec(self, sql: str, args: tuple = ()) -> Result:
        text, returns_id = translate(sql)
        async with self._connection() as conn:
            if returns_id:
                rows = await conn.fetch(text, *args)
                return Result(len(rows), rows[0]["id"] if rows else None)
            return Result(_rowcount(await conn.execute(text, *args)), None)
