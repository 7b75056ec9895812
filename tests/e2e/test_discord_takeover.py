"""A bot process that dies between storing its decision and posting (kill -9, a crash, a lost host) loses nothing:
another process serving the same servers posts the crisis reply (moderators alerted first), the caution note and
the case card it had reserved, once, and a reply the dead process did post but could not record is not posted
twice (the send's nonce)."""
from __future__ import annotations

import asyncio

from bot.pipeline import Pipeline

RISKY = "Put the rapa cream right on the fresh surgical wound, it stops the scar"
CRISIS = "I want to kill myself tonight"


def bot_messages(fake, channel):
    return [m for m in fake.bot_messages(channel)]


def never_done(harness, monkeypatch) -> None:
    """The process dies before it can mark the post done."""
    async def not_done(post_id):
        return None
    monkeypatch.setattr(harness.bot.get_cog("Listeners"), "_done", not_done)


async def die_silently(harness, monkeypatch) -> None:
    """The process stops without a word: no clean retirement, so its heartbeat just goes stale."""
    async def no_retire(instance):
        return None
    monkeypatch.setattr(harness.store, "retire_instance", no_retire)
    await harness.stop()


async def successor(make_harness, database, policy):
    """Another process of the same deployment (same database) that takes over after half a second of silence."""
    return await make_harness(policy, database=database, configure=False, heartbeat_seconds=0.1,
                              takeover_after_seconds=0.5)


async def wait_until(predicate, timeout=10.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.05)


async def test_a_crisis_reply_reserved_by_a_process_that_died_is_posted_by_another(harness, fake, database, policy,
                                                                                    monkeypatch, make_harness):
    async def killed_before_posting(message, post, outcome):
        return None   # the decision is stored; the process dies before it posts anything
    monkeypatch.setattr(harness.bot.get_cog("Listeners"), "_act", killed_before_posting)
    never_done(harness, monkeypatch)
    msg, outcome = await harness.post(CRISIS)
    assert outcome.reply == "resources" and not bot_messages(fake, fake.general)
    await die_silently(harness, monkeypatch)
    b = await successor(make_harness, database, policy)
    await wait_until(lambda: bot_messages(fake, fake.general) and bot_messages(fake, fake.mods))
    [reply] = bot_messages(fake, fake.general)
    assert str(reply["message_reference"]["message_id"]) == msg["id"]
    assert "Help is available" in reply["embeds"][0]["title"]
    [alert] = bot_messages(fake, fake.mods)
    assert f"<@&{fake.g1.oncall_role}>" in alert["content"]
    await wait_until(lambda: "resources were posted" in fake.messages[alert["id"]]["content"])
    assert (await b.store.replies(outcome.post_id))["resources"] == reply["id"]
    assert (await b.store.case(outcome.case_id, community=fake.guild_id))["card_message_id"] == alert["id"]
    events = [e["action"] for e in await b.store.audit_log(community=fake.guild_id, post_id=outcome.post_id)]
    assert "taken_over" in events
    await asyncio.sleep(0.5)   # further sweeps find nothing left to do
    assert len(bot_messages(fake, fake.general)) == 1 and len(bot_messages(fake, fake.mods)) == 1


async def test_a_note_posted_but_not_recorded_by_a_dead_process_is_not_posted_twice(harness, fake, database, policy,
                                                                                   monkeypatch, make_harness):
    async def died_after_discord_answered(self, post, outcome, message_id, *, now=None):
        return None   # Discord made the message; the process died before storing its id
    real_reply_sent = Pipeline.reply_sent
    monkeypatch.setattr(Pipeline, "reply_sent", died_after_discord_answered)
    never_done(harness, monkeypatch)
    _, outcome = await harness.post(RISKY)
    assert outcome.reply == "note" and len(bot_messages(fake, fake.general)) == 1
    await die_silently(harness, monkeypatch)
    monkeypatch.setattr(Pipeline, "reply_sent", real_reply_sent)   # the successor records as usual
    b = await successor(make_harness, database, policy)
    note_id = bot_messages(fake, fake.general)[0]["id"]
    for _ in range(100):
        if (await b.store.replies(outcome.post_id)).get("note") == note_id:
            break
        await asyncio.sleep(0.05)
    assert (await b.store.replies(outcome.post_id))["note"] == note_id
    assert len(bot_messages(fake, fake.general)) == 1   # the resend with the same nonce returned the first


async def test_a_live_process_keeps_its_own_work(harness, fake, database, policy, monkeypatch):
    """A slow process is not a dead one: while it heartbeats, nobody else posts for its posts."""
    async def slow(message, post, outcome):
        return None
    monkeypatch.setattr(harness.bot.get_cog("Listeners"), "_act", slow)
    _, outcome = await harness.post(CRISIS)
    await harness.store.heartbeat(harness.bot.instance)
    orphans = await harness.store.orphaned_posts(me="someone-else", dead_before=outcome_time_ago(60))
    assert orphans == []


def outcome_time_ago(seconds):
    from datetime import timedelta

    from bot.storage.clock import utcnow
    return utcnow() - timedelta(seconds=seconds)


async def test_a_stopping_bot_finishes_the_posts_it_is_handling_before_closing_storage(harness, fake, monkeypatch):
    """Ctrl-C (or docker stop) while a crisis post is being handled: the reply still goes out and is recorded, and
    nothing writes to a closed database."""
    listeners = harness.bot.get_cog("Listeners")
    real_act = listeners._act

    async def slow_act(message, post, outcome):
        await asyncio.sleep(0.5)   # Discord is slow today
        await real_act(message, post, outcome)
    monkeypatch.setattr(listeners, "_act", slow_act)
    msg = await fake.send_message(CRISIS)
    await wait_until(lambda: bool(listeners.bot._in_flight))
    database = harness.db_path
    await harness.stop()          # what SIGINT does: bot.close(), then storage closes
    [reply] = bot_messages(fake, fake.general)
    assert str(reply["message_reference"]["message_id"]) == msg["id"]
    from bot.storage import Store
    reopened = await Store.open(database)
    try:
        stored = await reopened.post_by_message("discord", msg["id"])
        assert (await reopened.replies(stored["id"]))["resources"] == reply["id"]
    finally:
        await reopened.close()


async def test_a_note_a_moderator_sent_while_no_bot_ran_is_posted_once_and_removed_with_the_post(harness, fake,
                                                                                                  policy):
    """The outbox posts it; a takeover of the stopped process's post must not post it again, nor drop its record."""
    from bot.cases import CaseService
    from bot.storage import Store
    msg, outcome = await harness.post("I am going to stop my meds cold turkey")
    assert outcome.case_id and outcome.reply is None
    database = harness.db_path
    await harness.stop()                               # a clean stop: its posts may be taken over at once
    dashboard = await Store.open(database)             # the dashboard, while no bot runs
    await CaseService(dashboard, lambda: policy).send_note(fake.guild_id, outcome.case_id, "alice")
    await dashboard.close()
    await harness.start()                              # the outbox poll and the takeover sweep both run
    await wait_until(lambda: bool(bot_messages(fake, fake.general)))
    await asyncio.sleep(0.5)
    [note] = bot_messages(fake, fake.general)
    for _ in range(50):
        if (await harness.store.replies(outcome.post_id)).get("note") == note["id"]:
            break
        await asyncio.sleep(0.05)
    assert (await harness.store.replies(outcome.post_id))["note"] == note["id"]
    await harness.delete(msg)                          # the member deletes the post: Caveat's note goes too
    assert not bot_messages(fake, fake.general)


async def test_a_post_the_bot_has_finished_with_is_nobodys_to_take_over(harness, fake):
    _, outcome = await harness.post(RISKY)
    assert outcome.reply == "note"
    assert (await harness.store.post(outcome.post_id, community=fake.guild_id))["handled_by"] is None
    await harness.store.retire_instance(harness.bot.instance)   # even if this process is gone now
    assert await harness.store.orphaned_posts(me="another", dead_before=outcome_time_ago(0)) == []
