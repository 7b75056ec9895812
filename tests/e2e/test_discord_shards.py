"""Shards, end to end: one process on two shards (AutoShardedBot), two `caveat run` processes on one shard each,
and a gateway RESUME that replays events the bot already had. With two shards the fake routes guild 1 to shard 0
and guild 2 to shard 1, as Discord does: `(guild_id >> 22) % 2`."""
from __future__ import annotations

import asyncio

from bot.shards import ShardedCaveatBot

from bot_process import BotProcess, go_live
from fake_discord import shard_of
from ledger import Ledger

RISKY = "Put the rapa cream right on the fresh surgical wound, it stops the scar"
BENIGN = "Does anyone have a good recipe for a low-salt soup?"


class QuickShardedBot(ShardedCaveatBot):
    """Discord allows one IDENTIFY per 5 s (discord.py waits that long between shards); the fake has no such limit."""

    async def before_identify_hook(self, shard_id, *, initial=False):
        return None


def notes_in(fake, channel, since=0):
    """Replies the bot posted in `channel` (notes and crisis replies carry a message_reference)."""
    return [r for r in fake.find("POST", rf"^/channels/{channel.id}/messages$", since=since)
            if r.json.get("message_reference")]


def members_posts(session) -> list[str]:
    """Ids of the members' messages (not the bot's own) a gateway session was sent."""
    return [d["id"] for _, t, d in session.log if t == "MESSAGE_CREATE" and not d["author"].get("bot")]


async def test_one_process_on_two_shards_sees_each_guild_on_its_own_shard(fake, make_harness, policy):
    assert shard_of(fake.g1.id, 2) == 0 and shard_of(fake.g2.id, 2) == 1
    h = await make_harness(policy, name="sharded.db", bot_class=QuickShardedBot, shard_ids=[0, 1], shard_count=2)
    s0, s1 = fake.live_sessions((0, 2)), fake.live_sessions((1, 2))
    assert len(s0) == len(s1) == 1 and len(fake.sessions) == 2
    [(_, ready0, r0), (_, ready1, r1)] = s0[0].log[:1] + s1[0].log[:1]
    assert ready0 == ready1 == "READY" and r0["shard"] == [0, 2] and r1["shard"] == [1, 2]
    assert [g["id"] for g in r0["guilds"]] == [fake.g1.id] and [g["id"] for g in r1["guilds"]] == [fake.g2.id]
    bot = h.bot
    assert bot.shard_count == 2 and sorted(bot.shards) == [0, 1]
    assert bot.get_guild(int(fake.g1.id)).shard_id == 0 and bot.get_guild(int(fake.g2.id)).shard_id == 1

    mine, _ = await h.post(RISKY)
    theirs, _ = await h.post(RISKY, author=fake.dave, channel=fake.g2.general)
    assert len(notes_in(fake, fake.general)) == 1 and len(notes_in(fake, fake.g2.general)) == 1
    assert members_posts(s0[0]) == [mine["id"]] and members_posts(s1[0]) == [theirs["id"]]


async def test_an_autosharded_bot_without_a_count_asks_discord_how_many(fake, make_harness, policy):
    fake.recommended_shards = 2
    h = await make_harness(policy, name="auto.db", bot_class=QuickShardedBot)
    assert len(fake.find("GET", r"^/gateway/bot$")) == 1
    assert h.bot.shard_count == 2 and sorted(s.shard for s in fake.live_sessions()) == [(0, 2), (1, 2)]


async def test_a_resume_replays_missed_and_already_seen_events_and_the_post_gets_one_note(harness, fake):
    msg, first = await harness.post(RISKY)
    [session] = fake.live_sessions()
    identified = fake.identify_count
    again = harness.bot.wait_for("caveat_post_handled", check=lambda mid, _: mid == int(msg["id"]), timeout=5)
    resumed = harness.bot.wait_for("resumed", timeout=5)
    # RECONNECT (op 7): the client resumes with its last seq, and the fake replays the last 4 events once more.
    await fake.reconnect(session, overlap=4)
    await resumed
    _, replayed = await again
    assert session.resumes == 1 and fake.identify_count == identified      # resumed, not a new session
    assert replayed.duplicate and replayed.post_id == first.post_id
    await harness.post(BENIGN)                                               # the session still carries events
    assert len(notes_in(fake, fake.general)) == 1


async def test_two_caveat_run_processes_each_answer_only_their_shards_guilds(fake, database, policy, tmp_path):
    await go_live(database, policy, fake.guilds)
    a = BotProcess(fake, "shard0", database, ["--shards", "0", "--shard-count", "2"], tmp_path)
    b = BotProcess(fake, "shard1", database, ["--shards", "1", "--shard-count", "2", "--no-sync"], tmp_path)
    try:
        [sa], [sb] = await asyncio.gather(a.start([(0, 2)]), b.start([(1, 2)]))
        since = fake.mark()
        mine = await fake.send_message(RISKY)
        theirs = await fake.send_message(RISKY, author=fake.dave, channel=fake.g2.general)
        note_a = await fake.wait_for_request("POST", rf"^/channels/{fake.general.id}/messages$", since=since, timeout=15)
        note_b = await fake.wait_for_request("POST", rf"^/channels/{fake.g2.general.id}/messages$", since=since,
                                             timeout=15)
        assert str(note_a.json["message_reference"]["message_id"]) == mine["id"]
        assert str(note_b.json["message_reference"]["message_id"]) == theirs["id"]
        assert note_a.headers["Authorization"] == f"Bot {a.token}" and note_b.headers["Authorization"] == f"Bot {b.token}"
        assert members_posts(sa) == [mine["id"]] and members_posts(sb) == [theirs["id"]]
        async with Ledger(database) as ledger:   # each case card posted and audited: both bots are done
            for guild in (fake.g1, fake.g2):
                await ledger.wait_until(lambda ledger, g=guild: ledger.events(g.id, "case_card_posted"), timeout=15)
    finally:
        codes = await asyncio.gather(a.stop(), b.stop())
    assert codes == [130, 130], (a.log()[-2000:], b.log()[-2000:])   # Ctrl-C: the bot's usual exit status
    assert not a.errors() and not b.errors(), (a.errors(), b.errors())
    assert not [s for s in fake.sessions if not s.over]                     # both closed their sessions cleanly
