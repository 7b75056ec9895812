"""Members' side, end to end: notes under risky posts, the emergency lane, cooldowns, edits, deletes, restarts."""
from __future__ import annotations

import asyncio

from bot.community import update_config

from fake_discord import User

RISKY = "Put the rapa cream right on the fresh surgical wound, it stops the scar"
SAFE = "Don't put rapamycin on a fresh surgical wound, it slows healing"
CRISIS = "I want to kill myself tonight"
NO_PINGS = {"parse": [], "replied_user": False}


def replies_to(fake, message, since=0):
    """Messages the bot posted in reply to `message`."""
    return [r for r in fake.find("POST", rf"^/channels/{message['channel_id']}/messages$", since=since)
            if str((r.json.get("message_reference") or {}).get("message_id")) == message["id"]]


def cards(fake, since=0):
    """Messages the bot posted in the moderators' channel."""
    return fake.find("POST", rf"^/channels/{fake.mods.id}/messages$", since=since)


async def test_risky_post_gets_a_sourced_note_that_pings_nobody(harness, fake):
    msg, outcome = await harness.post(RISKY)
    [reply] = replies_to(fake, msg)
    body = reply.json
    assert body["allowed_mentions"] == NO_PINGS
    [embed] = body["embeds"]
    assert embed["title"] == "Rapamycin (sirolimus) and fresh wounds"
    assert "wound healing" in embed["description"]
    assert "**Sources**\n1. [Wound-healing complications" in embed["description"]
    assert "(https://www.ncbi.nlm.nih.gov/pubmed/15239621)" in embed["description"]
    assert embed["footer"]["text"].startswith("Note rapa-wounds · Why am I seeing this?")
    buttons = [c for row in body["components"] for c in row["components"]]
    assert [b["label"] for b in buttons] == ["Helpful", "Not helpful", "Dispute"]
    assert buttons[0]["custom_id"] == f"caveat:fb:{outcome.decision_id}:helpful"
    assert fake.requests[fake.requests.index(reply)].headers["Authorization"] == "Bot fake-token"
    # note_and_queue: moderators get a card too, and nothing in the moderators' channel pings anyone.
    [card] = cards(fake)
    assert card.json["allowed_mentions"]["parse"] == []
    assert card.json["embeds"][0]["title"].startswith(f"Case #{outcome.case_id} · risky_self_treatment")


async def test_safe_post_bot_post_and_webhook_post_get_nothing(harness, fake):
    await harness.post(SAFE)
    await fake.send_message(RISKY, author=User(fake.snowflake(), "otherbot", bot=True))  # a bot
    await fake.send_message(RISKY, webhook_id=fake.snowflake())       # a webhook
    await harness.post(RISKY, author=fake.other_member)               # sentinel: processed after the two above
    assert len(fake.find("POST", r"/channels/\d+/messages$")) == 2   # one note + one card, for the sentinel only


async def test_exempt_role_is_not_assessed(fake, tmp_path, harness):
    harness.bot.policies.current = _with_community(harness.bot.policy, exempt_roles=("Clinicians",))
    fake.member.roles = [fake.exempt_role]
    await fake.send_message(RISKY)
    await harness.post(RISKY, author=fake.other_member)  # sentinel
    assert len(fake.find("POST", rf"^/channels/{fake.general.id}/messages$")) == 1


async def test_emergency_in_a_forum_thread_gets_resources_and_pings_on_call(harness, fake):
    msg, outcome = await harness.post(CRISIS, channel=fake.thread)
    [reply] = replies_to(fake, msg)
    assert reply.json["allowed_mentions"] == NO_PINGS
    text = reply.json["embeds"][0]["description"]
    assert "988 Suicide & Crisis Lifeline" in text and "call or text 988" in text
    [alert] = cards(fake)
    assert alert.json["content"].startswith(f"<@&{fake.oncall_role}> 🚨 Emergency")
    assert alert.json["allowed_mentions"] == {"parse": [], "roles": [int(fake.oncall_role)]}  # only on-call
    assert alert.json["embeds"][0]["title"].startswith(f"🚨 Case #{outcome.case_id}")
    case = await harness.store.case(outcome.case_id, community=fake.guild_id)
    assert case["priority"] == 4
    # The post is never removed automatically.
    assert not fake.find("DELETE", r"/messages/")


async def test_deleting_a_crisis_post_takes_down_the_public_reply_and_keeps_the_case(harness, fake):
    msg, outcome = await harness.post(CRISIS)
    [reply] = replies_to(fake, msg)
    since = fake.mark()
    await harness.delete(msg)
    await fake.wait_for_request("DELETE", rf"/channels/{msg['channel_id']}/messages/{reply.response['id']}$", since=since)
    assert reply.response["id"] not in fake.messages
    case = await harness.store.case(outcome.case_id, community=fake.guild_id)
    assert case is not None                          # moderators keep the case (text purged)
    [event] = await harness.store.audit_log(community=fake.guild_id, action="resources_removed")
    assert event["post_id"] == outcome.post_id


async def test_cooldowns_limit_notes_but_never_the_emergency_lane(harness, fake):
    first, _ = await harness.post(RISKY)
    second, outcome = await harness.post(RISKY + " again")
    assert len(replies_to(fake, first)) == 1
    assert replies_to(fake, second) == []           # same member, same topic, within 24 h
    assert outcome.note_blocked and "already got a note" in outcome.note_blocked
    assert len(cards(fake)) == 2                    # moderators still see both posts
    for _ in range(2):
        crisis, _ = await harness.post(CRISIS)
        assert len(replies_to(fake, crisis)) == 1   # cooldowns never apply to crisis resources


async def test_edit_reassesses_without_a_second_note_and_delete_purges(harness, fake):
    msg, outcome = await harness.post("Rapa has been fine for me so far")
    assert outcome.decision.action == "none" and not replies_to(fake, msg)
    msg, outcome = await harness.edit(msg, RISKY)
    assert len(replies_to(fake, msg)) == 1          # the edit made it risky: first note
    [card] = cards(fake)
    case_id = outcome.case_id
    msg, outcome = await harness.edit(msg, RISKY + " and it worked great")
    assert len(replies_to(fake, msg)) == 1          # never a second note for the same post
    assert outcome.case_id == case_id
    [note] = replies_to(fake, msg)
    since = fake.mark()
    await harness.delete(msg)
    patch = await fake.wait_for_request("PATCH", rf"/channels/{fake.mods.id}/messages/{card.response['id']}",
                                        since=since)
    # Caveat's note would otherwise stay up, saying what the deleted post was about.
    await fake.wait_for_request("DELETE", rf"/channels/{msg['channel_id']}/messages/{note.response['id']}$", since=since)
    assert note.response["id"] not in fake.messages
    embed = patch.json["embeds"][0]
    assert "post deleted" in embed["description"] and "post deleted by its author" in embed["fields"][-1]["value"]
    assert patch.json["components"] == []
    stored = await harness.store.post_by_message("discord", msg["id"])
    assert stored["text"] is None


async def test_duplicate_message_create_after_restart_sends_no_second_note(harness, fake):
    msg, _ = await harness.post(RISKY)
    await harness.restart()
    _, outcome = await harness.post(RISKY, message_id=msg["id"])
    assert outcome.duplicate
    assert len(replies_to(fake, msg)) == 1
    assert len(cards(fake)) == 1


async def test_rate_limited_note_is_retried_and_sent_once(harness, fake):
    fake.fail_next("POST", rf"^/channels/{fake.general.id}/messages$", 429)
    msg, _ = await harness.post(RISKY)
    attempts = replies_to(fake, msg)
    assert [r.status for r in attempts] == [429, 200]


async def test_failed_note_is_released_and_audited(harness, fake):
    fake.fail_next("POST", rf"^/channels/{fake.general.id}/messages$", 403)
    msg, outcome = await harness.post(RISKY)
    assert [r.status for r in replies_to(fake, msg)] == [403]
    assert await harness.store.replies(outcome.post_id) == {}
    assert (await harness.store.audit_log(community=fake.guild_id, action="note_failed"))[0]["detail"] == {"error": "HTTP 403"}


def _with_community(policy, **changes):
    """A copy of the policy with community settings changed (exemptions etc.)."""
    from dataclasses import replace
    return replace(policy, community=policy.community.model_copy(update=changes))


async def test_emergency_reply_goes_out_even_when_the_alert_fails(harness, fake):
    fake.fail_next("POST", rf"^/channels/{fake.mods.id}/messages$", 403)
    msg, outcome = await harness.post(CRISIS)
    assert len(replies_to(fake, msg)) == 1
    [failed] = await harness.store.audit_log(community=fake.guild_id, action="case_card_failed")
    assert failed["case_id"] == outcome.case_id and failed["detail"] == {"status": 403, "alert": True}
    # the case is still in the queue for /caveat queue
    assert (await harness.store.case(outcome.case_id, community=fake.guild_id))["status"] == "open"


async def test_crisis_resources_follow_the_server_locale_setting(harness, fake):
    await update_config(harness.store, harness.policy, fake.guild_id, "owner", {"locale": "en-GB"})
    msg, _ = await harness.post(CRISIS)
    [reply] = replies_to(fake, msg)
    assert "Samaritans" in reply.json["embeds"][0]["description"]


async def test_exempt_channel_and_its_threads_are_ignored(harness, fake):
    harness.bot.policies.current = _with_community(harness.bot.policy, exempt_channels=(fake.forum.name,))
    await fake.send_message(RISKY, channel=fake.thread)     # a thread in the exempt forum
    await harness.post(RISKY, author=fake.other_member)     # sentinel in #general
    assert not fake.find("POST", rf"^/channels/{fake.thread.id}/messages$")
    assert len(fake.find("POST", rf"^/channels/{fake.mods.id}/messages$")) == 1


async def test_the_crisis_alert_goes_out_first_and_says_truthfully_what_was_delivered(harness, fake):
    fake.fail_next("POST", rf"^/channels/{fake.general.id}/messages$", 403)
    since = fake.mark()
    msg, outcome = await harness.post(CRISIS)
    posts = [r for r in fake.requests[since:] if r.method == "POST" and "/messages" in r.path]
    assert posts[0].path == f"/channels/{fake.mods.id}/messages"   # moderators hear first
    assert "being posted under the post now" in posts[0].json["content"]
    alert_id = posts[0].response["id"]
    # The first reply failed: the alert says so at once, and Caveat retries in the background.
    assert "could NOT be posted yet (HTTP 403); Caveat keeps trying" in fake.messages[alert_id]["content"]
    retry = await fake.wait_for_request("POST", rf"^/channels/{fake.general.id}/messages$", since=since + 2)
    assert retry.status == 200
    patch = await fake.wait_for_request("PATCH", rf"^/channels/{fake.mods.id}/messages/{alert_id}$",
                                        since=fake.requests.index(retry))
    assert "Crisis resources were posted under the post." in patch.json["content"]
    assert await harness.store.replies(outcome.post_id) == {"resources": retry.response["id"]}


async def test_a_crisis_reply_that_never_goes_out_is_reported_as_failed(harness, fake):
    for _ in range(3):  # the first attempt and both retries
        fake.fail_next("POST", rf"^/channels/{fake.general.id}/messages$", 403)
    since = fake.mark()
    msg, outcome = await harness.post(CRISIS)
    alert_id = [r for r in fake.find("POST", rf"^/channels/{fake.mods.id}/messages$", since=since)][0].response["id"]
    for _ in range(50):
        if "gave up" in fake.messages[alert_id]["content"]:
            break
        await asyncio.sleep(0.05)
    assert "Crisis resources could NOT be posted (HTTP 403); Caveat gave up. Please reach out" in \
        fake.messages[alert_id]["content"]
    assert await harness.store.replies(outcome.post_id) == {}
    assert len(await harness.store.audit_log(community=fake.guild_id, action="resources_attempt_failed")) == 3
