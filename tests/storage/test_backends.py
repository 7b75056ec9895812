"""SQLite and PostgreSQL behind one Store: the same schema from one numbered list of migrations, the same SQL, and
the same guarantees when several processes (here: several stores, each with its own connections) share one
database: one decision per post, one note per member and topic, one claim per case."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from importlib import resources

import pytest

from bot.engine import Post
from bot.pipeline import Pipeline
from bot.storage import CaseConflict, Store
from bot.storage.postgres import redact_url, translate
from bot.community import update_config
from pgcluster import BACKENDS

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
RISKY = "Put the rapa cream right on the fresh surgical wound, it stops the scar"
CRISIS = "I want to kill myself tonight"


def post(mid="m1", author="u1", text=RISKY, community="g1") -> Post:
    return Post("discord", mid, "c1", author, text, community_id=community, author_name="Member", created_at=T0)


def migration_numbers(folder) -> list[int]:
    return sorted(int(e.name.split("_", 1)[0]) for e in folder.iterdir() if e.name.endswith(".sql"))


def test_both_dialects_have_the_same_numbered_migrations():
    root = resources.files("bot.storage") / "migrations"
    assert migration_numbers(root) == migration_numbers(root / "postgres") != []


def test_store_sql_is_translated_for_postgresql():
    assert translate("SELECT * FROM posts WHERE id=? AND text != '?' AND x=?") == (
        "SELECT * FROM posts WHERE id=$1 AND text != '?' AND x=$2", False)
    assert translate("INSERT OR IGNORE INTO replies (post_id, kind) VALUES (?,?)") == (
        "INSERT INTO replies (post_id, kind) VALUES ($1,$2) ON CONFLICT DO NOTHING", False)
    assert translate("INSERT OR IGNORE INTO feedback (decision_id) VALUES (?)") == (
        "INSERT INTO feedback (decision_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING id", True)
    assert translate("UPDATE cases SET status='open' WHERE id=?")[1] is False


def test_a_database_password_never_appears_in_messages():
    assert redact_url("postgresql://caveat:s3cret@db:5432/caveat") == "postgresql://caveat:***@db:5432/caveat"
    assert redact_url("postgresql://caveat@db/caveat") == "postgresql://caveat@db/caveat"
    assert "s3cret" not in redact_url("postgresql://caveat@db/caveat?password=s3cret&sslmode=require")
    assert "sslmode=require" in redact_url("postgresql://caveat@db/caveat?password=s3cret&sslmode=require")


@pytest.mark.skipif("postgresql" not in BACKENDS, reason="CAVEAT_TEST_BACKENDS excludes postgresql")
async def test_sqlite_and_postgresql_schemas_have_the_same_tables_and_columns(tmp_path, pg_cluster):
    lite, pg = await Store.open(tmp_path / "caveat.db"), await Store.open(pg_cluster.new_url())
    try:
        tables = [r["name"] for r in await lite._all(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        lite_schema = {t: {r["name"] for r in await lite._all(f"PRAGMA table_info({t})")} for t in tables}
        pg_schema: dict[str, set[str]] = {}
        for r in await pg._all("SELECT table_name, column_name FROM information_schema.columns"
                               " WHERE table_schema = current_schema()"):
            pg_schema.setdefault(r["table_name"], set()).add(r["column_name"])
        assert pg_schema == lite_schema
    finally:
        await lite.close()
        await pg.close()


@pytest.fixture
async def two_processes(database):
    """Two stores on one database, each with its own connections: what two Caveat processes have."""
    a, b = await Store.open(database), await Store.open(database)
    yield a, b
    await a.close()
    await b.close()


async def test_two_processes_deliver_the_same_post_and_it_is_decided_once(two_processes, policy):
    a, b = two_processes
    await update_config(a, policy, "g1", "owner", {"shadow_mode": "live"})
    outs = await asyncio.gather(*(Pipeline(s, policy).handle(post(), now=T0) for s in (a, b, a, b)))
    assert sum(not o.duplicate for o in outs) == 1 and sum(o.reply == "note" for o in outs) == 1
    assert (await b._one("SELECT COUNT(*) AS n FROM decisions"))["n"] == 1
    assert (await a._one("SELECT COUNT(*) AS n FROM replies"))["n"] == 1


async def test_a_members_cooldown_holds_across_processes(two_processes, policy):
    a, b = two_processes
    await update_config(a, policy, "g1", "owner", {"shadow_mode": "live"})
    outs = await asyncio.gather(*(Pipeline(s, policy).handle(post(mid=f"m{i}"), now=T0)
                                  for i, s in enumerate((a, b) * 3)))
    assert sum(o.reply == "note" for o in outs) == 1
    assert sum(1 for o in outs if o.note_blocked and "already got a note" in o.note_blocked) == 5


async def test_two_processes_never_both_claim_one_case(two_processes, policy):
    a, b = two_processes
    out = await Pipeline(a, policy).handle(post(text=CRISIS), now=T0)

    async def claim(store, who):
        try:
            await store.claim(out.case_id, who, community="g1")
            return who
        except CaseConflict:
            return None
    winners = [w for w in await asyncio.gather(*(claim(s, f"mod{i}") for i, s in enumerate((a, b) * 4))) if w]
    assert len(winners) == 1
    assert (await b.case(out.case_id, community="g1"))["claimed_by"] == winners[0]


async def test_each_shard_process_takes_only_its_own_servers_platform_actions(two_processes):
    a, b = two_processes
    ids = {g: await a.enqueue_action(g, "discord", "refresh_card", actor="web", case_id=1) for g in ("g1", "g2", "g3")}
    assert [r["id"] for r in await a.take_actions("discord", communities=["g1"])] == [ids["g1"]]
    assert await a.take_actions("discord", communities=[]) == []
    assert [r["id"] for r in await b.take_actions("discord", communities=["g2", "g1"])] == [ids["g2"]]
    assert [r["id"] for r in await b.take_actions("discord")] == [ids["g3"]]   # no filter: every server's


async def test_re_alerts_are_looked_up_only_for_the_processs_own_servers(store, policy):
    for g in ("g1", "g2"):
        await Pipeline(store, policy).handle(post(mid=f"c-{g}", text=CRISIS, community=g), now=T0)
    later = datetime(2026, 11, 1, 13, 0, tzinfo=timezone.utc)
    assert {r["community_id"] for r in await store.unattended_emergencies(older_than=later)} == {"g1", "g2"}
    assert {r["community_id"] for r in await store.unattended_emergencies(older_than=later, communities=["g2"])} == {"g2"}


async def test_the_sandbox_feed_reads_a_whole_page_in_a_fixed_number_of_queries(store, policy, monkeypatch):
    pipe = Pipeline(store, policy)
    await update_config(store, policy, "sandbox", "owner", {"shadow_mode": "live"})
    texts = [RISKY, "How do you all store your creams in summer?", CRISIS]
    outs = [await pipe.handle(Post("sandbox", f"s{i}", "c1", f"u{i % 4}", texts[i % 3], community_id="sandbox",
                                   author_name="m", created_at=T0), now=T0) for i in range(30)]
    calls = []
    for name in ("_one", "_all"):
        real = getattr(store, name)

        def counting(sql, args=(), _real=real):
            calls.append(sql)
            return _real(sql, args)
        monkeypatch.setattr(store, name, counting)
    feed = await store.sandbox_feed("sandbox")
    assert len(calls) == 4   # posts with decisions, replies, cases, withheld reasons: not 3 more per post
    by_id = {row["id"]: row for row in feed}
    for out in outs:
        row = by_id[out.post_id]
        assert ("note" in row["replies"]) == (out.reply == "note")
        assert ("resources" in row["replies"]) == (out.reply == "resources")
        assert (row["case"] or {}).get("id") == out.case_id
        assert row["withheld"] == out.note_blocked   # e.g. the member's cooldown for a second risky post
    assert any(row["withheld"] for row in feed) and any(row["case"] for row in feed)


@pytest.mark.skipif("postgresql" not in BACKENDS, reason="CAVEAT_TEST_BACKENDS excludes postgresql")
async def test_on_postgresql_one_servers_post_never_holds_up_anothers(pg_cluster):
    url = pg_cluster.new_url()
    a, b = await Store.open(url), await Store.open(url)
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold():
        async with a.transaction(community="g1"):
            entered.set()
            await release.wait()

    async def enter(store, community):
        async with store.transaction(community=community):
            await store._exec("INSERT INTO settings (scope, key, value) VALUES (?,?,?)",
                              (f"community:{community}", "probe", "1"))
    holder = asyncio.create_task(hold())
    try:
        await entered.wait()
        await asyncio.wait_for(enter(b, "g2"), 5)        # another server: at once
        same, everything = asyncio.create_task(enter(b, "g1")), asyncio.create_task(enter(b, None))
        await asyncio.sleep(0.3)
        assert not same.done() and not everything.done()  # the same server, and a write of anything, wait
        release.set()
        await asyncio.wait_for(asyncio.gather(holder, same, everything), 5)
    finally:
        release.set()
        await a.close()
        await b.close()


@pytest.mark.skipif("postgresql" not in BACKENDS, reason="CAVEAT_TEST_BACKENDS excludes postgresql")
async def test_on_postgresql_forgotten_text_leaves_the_table_files_after_compaction(pg_cluster, policy):
    from pathlib import Path
    store = await Store.open(pg_cluster.new_url())
    marker = "zqxjmarker"
    try:
        for i in range(20):
            await Pipeline(store, policy).handle(post(mid=f"f{i}", author="leaver", text=f"{RISKY} {marker}{i}"), now=T0)
        assert await store.forget_user("leaver", community="g1") == 20
        await store.compact()
        await store._exec("CHECKPOINT")
        data = Path((await store._one("SHOW data_directory"))["data_directory"])
        files = []
        for table in ("posts", "decisions", "feedback"):
            rel = (await store._one("SELECT pg_relation_filepath(?) AS f", (table,)))["f"]
            files += sorted(data.glob(rel + "*"))
        assert files and not any(marker.encode() in f.read_bytes() for f in files)
        assert await store._count("SELECT COUNT(*) AS n FROM posts WHERE text LIKE ?", (f"%{marker}%",)) == 0
    finally:
        await store.close()
