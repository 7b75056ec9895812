"""Storage under faults: another process holding the write lock, cancelled writes, private files, deleted text on disk.

The lock holder is a real second OS process (python + sqlite3) on the same file, like a `caveat replay` or
`caveat purge` next to the bot. SQLite's busy timeout is shortened on the test connections (200 ms instead of
5 s) so that holding the lock for 1.5 s is "longer than the busy timeout" and the tests stay fast.
"""
from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from bot.engine import Post
from bot.pipeline import Pipeline
from bot.storage import Store
from bot.web.sandbox import post_to_sandbox

CRISIS = "I want to kill myself tonight"
SECRET = "zebra-quokka-1729 put the rapa cream right on the fresh surgical wound"
MARKERS = (b"zebra-quokka-1729", b"fresh surgical wound")

HOLDER = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
print("released", flush=True)
"""


class LockHolder:
    """Another OS process that holds the database's write lock (BEGIN IMMEDIATE) until released."""

    def __init__(self, path):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "held"

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            assert self.proc.stdout.readline().strip() == "released"
            self.proc.wait(10)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def holders():
    started: list[LockHolder] = []

    def start(path) -> LockHolder:
        started.append(LockHolder(path))
        return started[-1]
    yield start
    for holder in started:
        holder.kill()


@pytest.fixture
async def stores(tmp_path):
    opened: list[Store] = []

    async def open_store(busy_ms: int = 200, budget_s: float = 20.0) -> Store:
        store = await Store.open(tmp_path / "caveat.db")
        await store.conn.execute(f"PRAGMA busy_timeout={busy_ms}")
        store.busy_budget_s = budget_s
        opened.append(store)
        return store
    yield open_store
    for store in opened:
        await store.close()


def post(mid: str, text: str = "how is everyone doing today", author: str = "u1") -> Post:
    return Post("discord", mid, "c1", author, text, community_id="g1")


async def count(store: Store, where: str = "1", args: tuple = ()) -> int:
    return (await store._one(f"SELECT count(*) AS n FROM posts WHERE {where}", args))["n"]


async def test_posts_wait_out_another_process_holding_the_lock_and_none_is_lost(tmp_path, stores, holders, policy):
    bot, dashboard = await stores(), await stores()  # the bot and the dashboard: two connections, one file
    pipe, web = Pipeline(bot, policy), Pipeline(dashboard, policy)
    await pipe.handle(post("before"))
    holder = holders(tmp_path / "caveat.db")
    texts = [CRISIS, "anyone tried magnesium for cramps?", "thanks all", CRISIS.replace("tonight", "now"),
             "good morning", "the clinic called back"]
    bot_posts = [asyncio.create_task(pipe.handle(post(f"m{i}", text, author=f"u{i}"))) for i, text in enumerate(texts)]
    web_posts = [asyncio.create_task(post_to_sandbox(web, "eve", f"sandbox post {i}")) for i in range(2)]
    await asyncio.sleep(1.5)  # 7x the busy timeout: without retries every write has failed by now
    waiting = bot_posts + web_posts
    assert not [t for t in waiting if t.done()], [repr(t.exception()) for t in waiting if t.done()]
    holder.release()
    outcomes = await asyncio.wait_for(asyncio.gather(*bot_posts), 30)
    sandbox = await asyncio.wait_for(asyncio.gather(*web_posts), 30)
    for outcome in outcomes + sandbox:
        assert outcome.decision is not None and not outcome.duplicate
    assert outcomes[0].reply == "resources" and outcomes[0].case_id is not None
    assert outcomes[3].reply == "resources" and outcomes[3].case_id is not None
    assert await bot.replies(outcomes[0].post_id) == {"resources": None}
    assert await count(bot) == 1 + len(texts) + 2
    # Both processes keep working afterwards.
    assert not bot.conn.in_transaction and not dashboard.conn.in_transaction
    later = await pipe.handle(post("after", CRISIS, author="u9"))
    assert later.reply == "resources"
    eve = await post_to_sandbox(web, "eve", "still here after the lock")
    assert eve.decision is not None
    assert await count(bot) == 1 + len(texts) + 2 + 2


async def test_exhausted_busy_budget_raises_a_clear_error_and_the_next_write_works(tmp_path, stores, holders, policy):
    from bot.storage.db import DatabaseBusy
    store = await stores(busy_ms=100, budget_s=0.6)
    holder = holders(tmp_path / "caveat.db")
    started = time.monotonic()
    with pytest.raises(DatabaseBusy, match="database is locked") as err:
        await store.upsert_post(post("lost"))
    assert 0.6 <= time.monotonic() - started < 5
    assert isinstance(err.value, sqlite3.OperationalError)  # what callers that catch SQLite errors expect
    assert not store.conn.in_transaction
    holder.release()
    outcome = await Pipeline(store, policy).handle(post("next", CRISIS))
    assert outcome.reply == "resources"
    assert await count(store) == 1 and await store.post_by_message("discord", "lost") is None


async def test_a_write_cancelled_while_waiting_for_the_lock_does_not_wedge_the_store(tmp_path, stores, holders, policy):
    store = await stores(busy_ms=1000)
    pipe = Pipeline(store, policy)
    holder = holders(tmp_path / "caveat.db")
    with pytest.raises(asyncio.TimeoutError):  # e.g. a handler given up by its caller
        await asyncio.wait_for(pipe.handle(post("cancelled")), 0.3)
    holder.release()  # the cancelled BEGIN may now go through in aiosqlite's thread
    await asyncio.sleep(0.2)
    assert not store.conn.in_transaction
    for i in range(3):
        assert (await pipe.handle(post(f"after{i}", CRISIS, author=f"u{i}"))).reply == "resources"
    assert await store.post_by_message("discord", "cancelled") is None
    assert await count(store) == 3


async def test_a_commit_that_meets_a_reader_is_retried_not_left_open(tmp_path, stores, policy):
    """Rollback-journal mode (a copy restored without WAL, say): COMMIT waits for readers and can fail busy."""
    store = await stores(busy_ms=100)
    async with store.conn.execute("PRAGMA journal_mode=DELETE") as cur:
        assert (await cur.fetchone())[0] == "delete"
    reader = sqlite3.connect(tmp_path / "caveat.db", isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM posts").fetchone()  # a shared lock: no COMMIT can finish meanwhile
        asyncio.get_running_loop().call_later(0.8, reader.execute, "COMMIT")
        outcome = await Pipeline(store, policy).handle(post("m1", CRISIS))
        assert outcome.reply == "resources"
        assert not store.conn.in_transaction
        assert (await Pipeline(store, policy).handle(post("m2"))).decision is not None
        assert await count(store) == 2
    finally:
        reader.close()


async def test_database_files_are_private_to_the_owner(tmp_path):
    old = os.umask(0o022)
    try:
        store = await Store.open(tmp_path / "new" / "caveat.db")
        try:
            await store.upsert_post(post("m1"))
            files = [tmp_path / "new" / f"caveat.db{suffix}" for suffix in ("", "-wal", "-shm")]
            assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o600 for f in files}
            assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
        finally:
            await store.close()
        # Files an older version left world-readable are tightened on open (a second connection keeps -wal/-shm).
        path = tmp_path / "old.db"
        legacy = sqlite3.connect(path, isolation_level=None)
        try:
            legacy.execute("PRAGMA journal_mode=WAL")
            legacy.execute("CREATE TABLE t (x)")
            files = [path, tmp_path / "old.db-wal", tmp_path / "old.db-shm"]
            for f in files:
                os.chmod(f, 0o644)
            store = await Store.open(path)
            await store.close()
            assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o600 for f in files}
        finally:
            legacy.close()
    finally:
        os.umask(old)


async def test_opening_a_second_store_keeps_the_first_ones_locks(tmp_path, stores):
    """Opening never opens and closes a descriptor of a live database (on POSIX that drops this process's locks:
    another process closing its connection would then take itself for the last one and delete the WAL)."""
    bot, dashboard = await stores(), await stores()
    await bot.upsert_post(post("m1"))
    other = sqlite3.connect(tmp_path / "caveat.db", isolation_level=None)
    other.execute("INSERT INTO settings (scope, key, value) VALUES ('x', 'y', '1')")
    other.close()
    assert (tmp_path / "caveat.db-wal").exists() and (tmp_path / "caveat.db-shm").exists()
    await dashboard.upsert_post(post("m2"))
    assert await count(bot) == 2 and await bot.get_setting("x", "y") == 1


def on_disk(tmp_path) -> dict[str, list[bytes]]:
    """Which of the markers each database file holds (caveat.db, -wal, -shm)."""
    return {f.name: [m for m in MARKERS if m in f.read_bytes()] for f in sorted(tmp_path.glob("caveat.db*"))}


async def test_deleted_text_leaves_every_file_once_a_concurrent_reader_finishes(tmp_path, stores, policy):
    store = await stores()
    store.scrub_retry_max_s = 0.2
    pipe = Pipeline(store, policy)
    await pipe.handle(post("secret", SECRET))
    await pipe.handle(post("other"))
    assert any(on_disk(tmp_path).values())  # the test can see text on disk
    # The dashboard (another connection) is in the middle of reading when the member deletes the post.
    reader = sqlite3.connect(tmp_path / "caveat.db", isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM posts WHERE text IS NOT NULL").fetchone()[0] == 2
        assert await pipe.handle_delete("discord", "secret") is not None
        assert (await store.post_by_message("discord", "secret"))["text"] is None
        # While that read goes on, SQLite must keep the old page versions: the reader may still read them.
        assert reader.execute("SELECT count(*) FROM posts WHERE text IS NOT NULL").fetchone()[0] == 2
        pending_while_reading = getattr(store, "scrub_pending", None)
        reader.execute("COMMIT")  # the read ends; the connection stays open like the dashboard's
        deadline = time.monotonic() + 10
        while (any(on_disk(tmp_path).values()) or getattr(store, "scrub_pending", False)) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert on_disk(tmp_path) == {"caveat.db": [], "caveat.db-shm": [], "caveat.db-wal": []}
        assert pending_while_reading is True and not store.scrub_pending
        # The store still works, and a later delete with no reader in the way is gone at once.
        await pipe.handle(post("secret2", SECRET.replace("1729", "1730")))
        await pipe.handle_delete("discord", "secret2")
        assert on_disk(tmp_path) == {"caveat.db": [], "caveat.db-shm": [], "caveat.db-wal": []}
    finally:
        reader.close()


async def test_retention_purge_runs_in_short_transactions_another_writer_gets_in(tmp_path, stores, policy):
    purger, bot = await stores(busy_ms=5000), await stores(busy_ms=5000)  # `caveat purge` next to the bot
    purger.redact_chunk = 5
    t0 = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
    old = t0 - timedelta(days=100)
    pipe = Pipeline(purger, policy)
    for i in range(40):
        await pipe.handle(Post("discord", f"old{i}", "c1", f"u{i}", f"old post {i}", community_id="g1",
                               created_at=old), now=old)
    purge = asyncio.create_task(purger.purge_retention(90, now=t0))
    deadline = time.monotonic() + 20
    while await count(bot, "purged_at IS NOT NULL") == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    await Pipeline(bot, policy).handle(post("during", CRISIS), now=t0)  # waits for one chunk at most
    purged_when_bot_wrote = await count(bot, "purged_at IS NOT NULL")
    assert await purge == 40
    assert 0 < purged_when_bot_wrote < 40
    assert await count(bot, "text IS NOT NULL") == 1
    events = [e for e in await bot.audit_log(community="") if e["action"] == "purge"]
    assert [e["detail"] for e in events] == [{"posts_purged": 40, "days": 90}]


async def test_processes_opening_a_new_database_at_the_same_moment_all_start(tmp_path):
    """Two bot shards (or a bot and its dashboard) started together on a fresh file: one migrates, none fails."""
    from bot.storage.db import _migrations
    for attempt in range(5):
        path = tmp_path / f"fresh{attempt}.db"
        stores = await asyncio.gather(*(Store.open(path) for _ in range(4)))
        try:
            applied = await stores[0]._all("SELECT version FROM schema_migrations ORDER BY version")
            assert [r["version"] for r in applied] == [n for n, _ in _migrations()]
        finally:
            for s in stores:
                await s.close()
