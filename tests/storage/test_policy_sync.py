"""One policy in force for every process on a database: published to storage, followed by every other process
(notified on PostgreSQL, polled on SQLite), and carried by every decision as the same policy_version."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from bot.engine import Post
from bot.pipeline import Pipeline
from bot.policy_sync import PolicySync
from bot.storage import Store
from policies.loader import PolicyHolder, load_policy

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
RISKY = "Put the rapa cream right on the fresh surgical wound, it stops the scar"


class Process:
    """What one Caveat process holds: its store, its policy holder and pipeline, and its PolicySync."""

    def __init__(self, store: Store, policy, *, poll_seconds: float = 0.05):
        self.store, self.holder = store, PolicyHolder(policy)
        self.pipeline = Pipeline(store, policy)
        self.sync = PolicySync(store, lambda: self.holder.current, self.apply, poll_seconds=poll_seconds,
                               fallback_poll_seconds=60)

    def apply(self, policy) -> None:
        self.holder.current = policy
        self.pipeline.set_policy(policy)


def edited_copy(policy_dir) -> None:
    """Move one threshold in a writable policy copy (a new policy version)."""
    path = policy_dir / "thresholds.yaml"
    path.write_text(path.read_text().replace("value: 0.3\n", "value: 0.35\n", 1))


async def wait_for(predicate, timeout=5.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.02)


async def test_a_policy_published_by_one_process_is_followed_by_the_other(database, policy, policy_dir):
    a_store, b_store = await Store.open(database), await Store.open(database)
    a, b = Process(a_store, policy), Process(b_store, policy)
    try:
        assert "published" in await a.sync.start()
        assert "in force" in await b.sync.start()
        follower = asyncio.create_task(b.sync.run())
        edited_copy(policy_dir)
        new = load_policy(policy_dir)
        assert new.version != policy.version
        a.apply(new)
        await a.sync.publish(new, actor="alice")
        # PostgreSQL: notified (its fallback poll is a minute away); SQLite: the next poll.
        await wait_for(lambda: b.holder.current.version == new.version)
        out = await b.pipeline.handle(Post("discord", "m1", "c1", "u1", RISKY, community_id="g1", created_at=T0),
                                      now=T0)
        stored = await a_store.decision(out.decision_id, community="g1")
        assert stored["policy_version"] == new.version
        # A reload in the follower reads its own configured folder, not the private copy it follows from.
        assert b.holder.source == policy.directory
        # Back to the shipped thresholds, long after the follower started listening: PostgreSQL must notify it.
        await asyncio.sleep(0.3)
        await a.sync.publish(policy, actor="alice")
        await wait_for(lambda: b.holder.current.version == policy.version)
        follower.cancel()
    finally:
        await a.sync.close()
        await b.sync.close()
        await a_store.close()
        await b_store.close()


async def test_a_process_starting_with_other_files_follows_the_database_and_says_so(database, policy, policy_dir):
    store = await Store.open(database)
    try:
        first = Process(store, policy)
        await first.sync.start()
        edited_copy(policy_dir)
        late = Process(store, load_policy(policy_dir))
        message = await late.sync.start()
        assert late.holder.current.version == policy.version
        assert policy.version in message and "caveat policy publish" in message
        await first.sync.close()
        await late.sync.close()
    finally:
        await store.close()


async def test_a_published_policy_that_does_not_load_is_refused_and_the_current_one_stays(database, policy, caplog):
    store = await Store.open(database)
    proc = Process(store, policy)
    try:
        await proc.sync.start()
        files = {"policy.yaml": "labels: [not a mapping"}
        await store.publish_policy("pol-broken", files, actor="mallory")
        assert await proc.sync.check() is False
        assert proc.holder.current.version == policy.version
        assert "does not load here" in caplog.text
        await store.publish_policy("pol-escape", {"../../escape.yaml": "x: 1"}, actor="mallory")
        assert await proc.sync.check() is False and proc.holder.current.version == policy.version
    finally:
        await proc.sync.close()
        await store.close()


def test_caveat_policy_publish_puts_a_directory_in_force(database, policy_dir, capsys):
    from bot.cli import main
    edited_copy(policy_dir)
    assert main(["policy", "publish", str(policy_dir), "--db", str(database), "--actor", "ops"]) == 0
    assert "published policy" in capsys.readouterr().out

    async def read():
        store = await Store.open(database)
        try:
            active = await store.active_policy()
            return active, await store.policy_files(active["version"])
        finally:
            await store.close()
    active, files = asyncio.run(read())
    assert active["version"] == load_policy(policy_dir).version and active["actor"] == "cli:ops"
    assert set(files) == set(load_policy(policy_dir).files)


def test_an_invalid_policy_is_never_published(database, policy_dir, capsys):
    from bot.cli import main
    (policy_dir / "thresholds.yaml").write_text("thresholds: [")
    assert main(["policy", "publish", str(policy_dir), "--db", str(database)]) == 2
    assert "NOT published" in capsys.readouterr().err


async def test_a_published_version_is_never_used_as_a_path(database, policy, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("still here")
    store = await Store.open(database)
    proc = Process(store, policy)
    try:
        await proc.sync.start()
        rel = "../" * 12 + str(victim).lstrip("/")
        await store.publish_policy(rel, {"dropped.txt": "x"}, actor="mallory")
        assert await proc.sync.check() is False
        assert (victim / "keep.txt").read_text() == "still here" and not (victim / "dropped.txt").exists()
        assert proc.holder.current.version == policy.version
    finally:
        await proc.sync.close()
        await store.close()


async def test_a_failed_read_of_a_publication_is_retried(database, policy, policy_dir, monkeypatch):
    a_store, b_store = await Store.open(database), await Store.open(database)
    a, b = Process(a_store, policy), Process(b_store, policy)
    try:
        await a.sync.start()
        await b.sync.start()
        edited_copy(policy_dir)
        new = load_policy(policy_dir)
        await a.sync.publish(new, actor="alice")
        real = b_store.policy_files
        calls = []

        async def flaky(version):
            calls.append(version)
            if len(calls) == 1:
                raise ConnectionResetError("the database went away for a moment")
            return await real(version)
        monkeypatch.setattr(b_store, "policy_files", flaky)
        try:
            await b.sync.check()
        except ConnectionResetError:
            pass
        assert b.holder.current.version == policy.version
        assert await b.sync.check() is True and b.holder.current.version == new.version
    finally:
        await a.sync.close()
        await b.sync.close()
        await a_store.close()
        await b_store.close()


async def test_a_follower_listens_again_after_losing_its_notification_connection(pg_cluster, policy, policy_dir):
    """PostgreSQL restarted (here: the listening backend is terminated): the next publication still arrives at
    once, not at the next fallback poll a minute later."""
    url = pg_cluster.new_url()
    a_store, b_store = await Store.open(url), await Store.open(url)
    a, b = Process(a_store, policy), Process(b_store, policy)
    follower = None
    try:
        await a.sync.start()
        await b.sync.start()
        follower = asyncio.create_task(b.sync.run())
        await wait_for(lambda: b.sync._stop_listening is not None)
        killed = await a_store._all("SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity"
                                    " WHERE query LIKE 'LISTEN%' AND pid != pg_backend_pid()")
        assert killed and all(r["done"] for r in killed)
        await asyncio.sleep(0.5)
        edited_copy(policy_dir)
        new = load_policy(policy_dir)
        await a.sync.publish(new, actor="alice")
        await wait_for(lambda: b.holder.current.version == new.version)
    finally:
        if follower is not None:
            follower.cancel()
        await a.sync.close()
        await b.sync.close()
        await a_store.close()
        await b_store.close()
