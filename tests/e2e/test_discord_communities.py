"""Two servers on one bot, end to end on the fake Discord: each server's posts, cases, cards, commands and
stats stay its own; per-server settings; concurrency; forums and threads; disputes; re-alerts; the dashboard's
decisions carried out on Discord."""
from __future__ import annotations

import asyncio
from datetime import date

import pytest

from bot.cases import CaseService
from bot.community import update_config
from bot.engine import Post
from fake_actions import RoleOption
from policies.loader import load_policy

RISKY = "Put the rapa cream right on the fresh surgical wound, it stops the scar"
CRISIS = "I want to kill myself tonight"
QUEUED = "I am going to stop my meds cold turkey"
TITLE = "Put rapa cream on your fresh surgical wound, it heals faster"
EPHEMERAL = 64


async def slash(fake, command, options=None, *, user, channel=None):
    """Run a slash command and return the bot's callback request."""
    interaction = await fake.run_slash_command(command, options, user=user, channel=channel)
    return await fake.wait_for_request("POST", rf"^/interactions/{interaction['id']}/[^/]+/callback$")


async def click(fake, message, custom_id, *, user):
    """Click a button and return the bot's callback request."""
    interaction = await fake.click_button(message, custom_id, user=user)
    return await fake.wait_for_request("POST", rf"^/interactions/{interaction['id']}/[^/]+/callback$")


def posted(fake, channel, since=0):
    """Messages the bot posted in `channel` since the mark."""
    return fake.find("POST", rf"^/channels/{channel.id}/messages$", since=since)


async def forum_post(harness, title, body, *, forum=None, author=None):
    """A member opens a forum post; returns (starter message, Outcome) once Caveat handled it."""
    fake = harness.fake
    thread_id = fake.snowflake()
    waiter = harness.bot.wait_for("caveat_post_handled", check=lambda mid, _: mid == int(thread_id), timeout=5)
    msg = await fake.create_forum_post(title, body, author=author or fake.member, forum=forum or fake.forum,
                                       thread_id=thread_id)
    _, outcome = await waiter
    return msg, outcome


async def test_each_server_sees_only_its_own_cases_cards_commands_and_stats(harness, fake):
    g1, g2 = fake.g1, fake.g2
    since = fake.mark()
    _, theirs = await harness.post(CRISIS, author=fake.dave, channel=g2.general)
    _, mine = await harness.post(QUEUED)
    # Each case card goes to its own server's moderators' channel, the crisis alert pings only g2's on-call.
    [card2] = [r for r in posted(fake, g2.mods, since) if r.json.get("embeds")]
    [card1] = [r for r in posted(fake, g1.mods, since) if r.json.get("embeds")]
    assert f"Case #{theirs.case_id}" in card2.json["embeds"][0]["title"]
    assert f"Case #{mine.case_id}" in card1.json["embeds"][0]["title"]
    assert card2.json["content"].startswith(f"<@&{g2.oncall_role}>")
    assert CRISIS not in str([r.json for r in fake.requests if f"/channels/{g1.mods.id}/" in r.path])

    # alice (g1) cannot see g2's case by id, in the queue or in the stats.
    reply = await slash(fake, "caveat case", {"case_id": theirs.case_id}, user=fake.alice)
    assert reply.json["data"]["content"] == f"No case #{theirs.case_id} in this server."
    queue = (await slash(fake, "caveat queue", user=fake.alice)).json["data"]["embeds"][0]
    assert f"#{mine.case_id}" in queue["description"] and f"#{theirs.case_id}" not in queue["description"]
    assert queue["title"].startswith("Open cases (1)")
    stats = (await slash(fake, "caveat stats", user=fake.alice)).json["data"]["embeds"][0]
    fields = {f["name"]: f["value"] for f in stats["fields"]}
    assert "emergency" not in fields["Cases by label"] and fields["Open cases"] == "1"

    # carol (g2) sees hers and not g1's.
    reply = await slash(fake, "caveat case", {"case_id": mine.case_id}, user=fake.carol, channel=g2.general)
    assert reply.json["data"]["content"] == f"No case #{mine.case_id} in this server."
    queue = (await slash(fake, "caveat queue", user=fake.carol, channel=g2.general)).json["data"]["embeds"][0]
    assert f"#{theirs.case_id}" in queue["description"] and f"#{mine.case_id}" not in queue["description"]


async def test_setup_sets_this_servers_channel_role_and_mode_and_refuses_bad_values(fake, make_harness, policy):
    harness = await make_harness(policy, name="bare.db", configure=False)
    # A new server is in shadow mode and has no moderators' channel yet: no public note, no card.
    since = fake.mark()
    _, outcome = await harness.post(RISKY, author=fake.dave, channel=fake.g2.general)
    assert outcome.shadow and outcome.reply is None and not posted(fake, fake.g2.general, since)
    reply = await slash(fake, "caveat setup", user=fake.carol, channel=fake.g2.general)
    fields = {f["name"]: f["value"] for f in reply.json["data"]["embeds"][0]["fields"]}
    assert fields["Moderators' channel"] == "not set" and fields["Mode"].startswith("shadow")

    reply = await slash(fake, "caveat setup", {"locale": "xx-XX"}, user=fake.carol, channel=fake.g2.general)
    assert reply.json["data"]["content"].startswith("Nothing changed: locale must be one of")

    reply = await slash(fake, "caveat setup", {"mod_channel": fake.g2.mods, "oncall_role": RoleOption(fake.g2.oncall_role),
                                               "mode": "live", "locale": "en-GB"},
                        user=fake.carol, channel=fake.g2.general)
    assert reply.json["data"]["content"] == "Settings saved."
    fields = {f["name"]: f["value"] for f in reply.json["data"]["embeds"][0]["fields"]}
    assert fields["Moderators' channel"] == f"<#{fake.g2.mods.id}>" and fields["Mode"].startswith("live")

    since = fake.mark()
    _, crisis = await harness.post(CRISIS, author=fake.dave, channel=fake.g2.general)
    [resources] = posted(fake, fake.g2.general, since)
    assert "Samaritans" in str(resources.json["embeds"])   # the server's locale
    [alert] = posted(fake, fake.g2.mods, since)
    assert alert.json["content"].startswith(f"<@&{fake.g2.oncall_role}> 🚨 Emergency")
    assert "Crisis resources were posted" in fake.messages[alert.response["id"]]["content"]
    # g1 was not set up: its posts still stay in shadow mode and its channel gets nothing of g2's.
    assert not posted(fake, fake.g1.mods, since)
    _, g1_post = await harness.post(RISKY)
    assert g1_post.shadow and g1_post.reply is None


async def test_concurrent_posts_by_one_member_on_one_topic_draw_one_note(harness, fake):
    since = fake.mark()
    texts = [RISKY, "rapa cream on my fresh surgical wound again today", "more rapa on the surgical wound tonight"]
    await asyncio.gather(*(harness.post(t) for t in texts))
    notes = [r for r in posted(fake, fake.general, since) if r.json.get("message_reference")]
    assert len(notes) == 1


async def test_concurrent_posts_in_a_channel_never_exceed_its_cap(harness, fake, policy):
    from fake_entities import User
    cap = policy.community.cooldowns.per_channel_notes
    members = [User(fake.snowflake(), f"m{i}", guild_id=fake.guild_id) for i in range(cap + 3)]
    since = fake.mark()
    await asyncio.gather(*(harness.post(RISKY, author=m) for m in members))
    notes = [r for r in posted(fake, fake.general, since) if r.json.get("message_reference")]
    assert len(notes) == cap


async def test_a_forum_posts_title_is_read_with_its_body(harness, fake):
    msg, outcome = await forum_post(harness, TITLE, "see title")
    assert outcome.reply == "note" and "rapa-wound" in [h.rule_id for h in outcome.decision.rule_hits]
    [note] = fake.find("POST", rf"^/channels/{msg['id']}/messages$")
    assert str(note.json["message_reference"]["message_id"]) == msg["id"]
    # The body alone would have drawn nothing.
    assert harness.bot.pipeline.engine.assess(Post("discord", "x", "c", "u", "see title")).action == "none"


async def test_shadow_mode_set_on_a_forum_covers_its_posts_and_threads_inherit(harness, fake):
    reply = await slash(fake, "caveat mode", {"mode": "shadow", "channel": fake.forum}, user=fake.alice)
    assert "(and every post in it)" in reply.json["data"]["content"]
    msg, outcome = await forum_post(harness, TITLE, "see title")
    assert outcome.shadow and outcome.reply is None
    assert not fake.find("POST", rf"^/channels/{msg['id']}/messages$")
    # A reply inside an existing thread of that forum inherits the forum's mode too.
    _, in_thread = await harness.post(RISKY, channel=fake.thread, author=fake.other_member)
    assert in_thread.shadow and in_thread.reply is None
    # The crisis lane ignores shadow mode.
    _, crisis = await forum_post(harness, "tonight", CRISIS, author=fake.other_member)
    assert crisis.reply == "resources"


async def test_only_the_author_can_dispute_a_note(harness, fake):
    _, outcome = await harness.post(RISKY)
    [note] = posted(fake, fake.general)
    note_msg = fake.messages[note.response["id"]]
    reply = await click(fake, note_msg, f"caveat:fb:{outcome.decision_id}:dispute", user=fake.other_member)
    assert reply.json["type"] == 4 and reply.json["data"]["flags"] == EPHEMERAL
    assert reply.json["data"]["content"].startswith("Only the member who wrote the post can dispute its note")
    assert (await harness.store.feedback(outcome.decision_id)).get("dispute") is None
    reply = await click(fake, note_msg, f"caveat:fb:{outcome.decision_id}:dispute", user=fake.member)
    assert reply.json["type"] == 9   # the author gets the form


async def test_an_unclaimed_emergency_re_alerts_on_call_until_claimed(harness, fake):
    await update_config(harness.store, harness.policy, fake.guild_id, "owner", {"realert_minutes": 0.005})
    since = fake.mark()
    _, outcome = await harness.post(CRISIS)
    realert = await fake.wait_for_request("POST", rf"^/channels/{fake.mods.id}/messages$", since=since + 3)
    assert realert.json["content"].startswith(f"<@&{fake.oncall_role}> 🚨 Still unattended: emergency case "
                                              f"#{outcome.case_id}")
    assert realert.json["allowed_mentions"]["roles"] == [int(fake.oncall_role)]
    card = fake.messages[[r for r in posted(fake, fake.mods, since) if r.json.get("embeds")][0].response["id"]]
    await click(fake, card, f"caveat:case:{outcome.case_id}:claim", user=fake.alice)
    mark = fake.mark()
    await asyncio.sleep(1.0)
    assert not [r for r in posted(fake, fake.mods, mark) if "Still unattended" in (r.json.get("content") or "")]


async def test_a_dashboard_decision_on_a_discord_case_happens_on_discord(harness, fake):
    """The dashboard writes the decision; the bot picks it up from storage, posts the note, updates the card."""
    await update_config(harness.store, harness.policy, fake.guild_id, "owner", {"shadow_mode": "shadow"})
    since = fake.mark()
    msg, outcome = await harness.post(RISKY)
    assert outcome.reply is None   # shadow mode: the note waits for a moderator
    [card] = [r for r in posted(fake, fake.mods, since) if r.json.get("embeds")]
    dashboard = CaseService(harness.store, lambda: harness.policy)   # what the web handler calls
    await dashboard.send_note(fake.guild_id, outcome.case_id, "dashboard-moderator")
    note = await fake.wait_for_request("POST", rf"^/channels/{fake.general.id}/messages$", since=since)
    assert str(note.json["message_reference"]["message_id"]) == msg["id"]
    assert note.json["embeds"][0]["footer"]["text"].startswith("Note rapa-wounds")
    patch = await fake.wait_for_request("PATCH", rf"^/channels/{fake.mods.id}/messages/{card.response['id']}$",
                                        since=since)
    assert "Resolved: caution note sent" in patch.json["embeds"][0]["fields"][-1]["value"]
    events = [e["action"] for e in await harness.store.audit_log(community=fake.guild_id, case_id=outcome.case_id)]
    assert "note_requested" in events and "note_sent" in events
    # The bot marks the card refresh done right after Discord answered the PATCH above.
    for _ in range(50):
        if await harness.store.pending_actions(community=fake.guild_id) == []:
            break
        await asyncio.sleep(0.05)
    assert await harness.store.pending_actions(community=fake.guild_id) == []


async def test_discord_and_dashboard_give_the_same_result_for_the_same_case(harness, fake):
    await update_config(harness.store, harness.policy, fake.guild_id, "owner", {"shadow_mode": "shadow"})
    results = []
    for via, author in (("discord", fake.member), ("web", fake.other_member)):
        since = fake.mark()
        _, outcome = await harness.post(RISKY, author=author)
        if via == "discord":
            [card] = [r for r in posted(fake, fake.mods, since) if r.json.get("embeds")]
            await click(fake, fake.messages[card.response["id"]], f"caveat:case:{outcome.case_id}:note", user=fake.alice)
        else:
            await CaseService(harness.store, lambda: harness.policy).send_note(fake.guild_id, outcome.case_id, fake.alice.id)
        note = await fake.wait_for_request("POST", rf"^/channels/{fake.general.id}/messages$", since=since)
        case = await harness.store.case(outcome.case_id, community=fake.guild_id)
        cooldowns = await harness.store._all("SELECT topic FROM cooldowns WHERE author_id=?", (author.id,))
        results.append((case["resolution"], case["resolved_by"], note.json["embeds"][0]["title"],
                        [r["topic"] for r in cooldowns]))
    assert results[0] == results[1]
    resolution, by, title, topics = results[0]
    assert resolution == "sent_note" and by == fake.alice.id and title.startswith("Rapamycin")
    assert len(topics) == 1   # the moderator's note counts against the member's cooldown, on both paths


async def test_dashboard_command_sends_a_private_one_time_link(harness, fake):
    reply = await slash(fake, "caveat dashboard", user=fake.alice)
    data = reply.json["data"]
    assert data["flags"] == EPHEMERAL and "http://127.0.0.1:8080/login/link/" in data["content"]
    token = data["content"].rsplit("/login/link/", 1)[1].strip()
    link = await harness.store.use_login_link(token)
    assert (link["moderator_id"], link["community_id"]) == (fake.alice.id, fake.guild_id)
    assert await harness.store.use_login_link(token) is None
    reply = await slash(fake, "caveat logout-everywhere", user=fake.alice)
    assert reply.json["data"]["content"].startswith("Ended ")


async def test_clear_replayed_closes_only_this_servers_replayed_cases(harness, fake):
    for community, mid in ((fake.guild_id, "h1"), (fake.g2.id, "h2")):
        await harness.bot.pipeline.handle(Post("discord", mid, "c", "u", RISKY, community_id=community), replayed=True)
    reply = await slash(fake, "caveat clear-replayed", user=fake.alice)
    assert reply.json["data"]["content"] == "Closed 1 replayed case(s)."
    assert len(await harness.store.cases(community=fake.g2.id, kind="replay")) == 1


@pytest.fixture
def expired_policy():
    """The shipped policy on a day after every note's review date."""
    return load_policy(today=date(2027, 6, 1))


async def test_after_the_notes_expire_the_bot_runs_and_the_crisis_lane_works(fake, make_harness, expired_policy):
    harness = await make_harness(expired_policy, name="later.db")
    since = fake.mark()
    _, crisis = await harness.post(CRISIS)
    assert crisis.reply == "resources" and posted(fake, fake.general, since)
    _, risky = await harness.post(RISKY, author=fake.other_member)
    assert risky.reply is None and risky.decision.action == "queue" and risky.case_id


async def test_a_button_carrying_another_servers_case_id_is_refused(harness, fake):
    """Even a forged component id cannot reach a case of another server."""
    import copy
    _, theirs = await harness.post(QUEUED, author=fake.dave, channel=fake.g2.general)
    since = fake.mark()
    _, mine = await harness.post(QUEUED)
    [card] = [r for r in posted(fake, fake.mods, since) if r.json.get("embeds")]
    forged = copy.deepcopy(fake.messages[card.response["id"]])
    for row in forged["components"]:
        for c in row["components"]:
            c["custom_id"] = c["custom_id"].replace(f":{mine.case_id}:", f":{theirs.case_id}:")
    reply = await click(fake, forged, f"caveat:case:{theirs.case_id}:claim", user=fake.alice)
    assert reply.json["data"]["content"] == f"No case #{theirs.case_id} in this server."
    assert (await harness.store.case(theirs.case_id, community=fake.g2.id))["status"] == "open"


async def test_the_queue_shows_replayed_history_only_when_asked_and_keeps_it_across_pages(harness, fake):
    for i in range(11):
        await harness.bot.pipeline.handle(Post("discord", f"h{i}", "c", "u", RISKY, community_id=fake.guild_id),
                                          replayed=True)
    _, live = await harness.post(QUEUED)
    reply = await slash(fake, "caveat queue", user=fake.alice)
    embed = reply.json["data"]["embeds"][0]
    assert embed["title"].startswith("Open cases (1)") and "replayed" not in embed["description"]
    reply = await slash(fake, "caveat queue", {"include_replayed": True, "sort": "oldest"}, user=fake.alice)
    embed = reply.json["data"]["embeds"][0]
    assert embed["title"] == "Open cases (12) · oldest first (replayed history included)"
    assert embed["description"].count("· replayed") == 10 and embed["footer"]["text"] == "page 1 of 2"
    page = reply.response["resource"]["message"]
    nxt = await click(fake, page, "caveat:queue:oldest:1:next:r", user=fake.alice)
    embed = nxt.json["data"]["embeds"][0]
    assert embed["footer"]["text"] == "page 2 of 2" and f"#{live.case_id}" in embed["description"]
