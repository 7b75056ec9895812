"""Moderators' side, end to end: case cards and their persistent buttons, locking, reasons, restarts."""
from __future__ import annotations

from urllib.parse import unquote

QUEUED = "I am going to stop my meds cold turkey"   # queue only with the shipped policy (stop-meds, 0.50)
RISKY = "Put the rapa cream right on the fresh surgical wound, it stops the scar"
EPHEMERAL = 64


async def callback(fake, interaction: dict):
    """The bot's answer to one interaction."""
    return await fake.wait_for_request("POST", rf"^/interactions/{interaction['id']}/[^/]+/callback$")


async def queued_card(harness, fake, text=QUEUED):
    """Post `text`; return (card message as the fake stores it, case id)."""
    since = fake.mark()
    _, outcome = await harness.post(text)
    [card] = fake.find("POST", rf"^/channels/{fake.mods.id}/messages$", since=since)
    return fake.messages[card.response["id"]], outcome.case_id


def buttons(message: dict) -> dict[str, dict]:
    """Components of a message by label."""
    return {c.get("label") or c["custom_id"]: c for row in message["components"] for c in row["components"]}


async def test_queued_post_becomes_a_case_card_with_everything_a_moderator_needs(harness, fake):
    card, case_id = await queued_card(harness, fake)
    assert not fake.find("POST", rf"^/channels/{fake.general.id}/messages$")   # queue only: nothing public
    embed = card["embeds"][0]
    assert embed["title"] == f"Case #{case_id} · risky_self_treatment · queue"
    assert "> I am going to stop my meds cold turkey" in embed["description"]
    assert f"/channels/{fake.guild_id}/{fake.general.id}/" in embed["description"]   # jump link
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Author"] == f"<@{fake.member.id}> (member)"
    assert fields["Labels"] == "risky_self_treatment 0.50"
    assert "`stop-meds`" in fields["Rules fired"] and "'cold turkey'" in fields["Rules fired"]
    assert fields["Proposed note"].startswith("`")
    assert embed["footer"]["text"].startswith("model rules-only · policy pol-")
    assert {b["custom_id"] for b in buttons(card).values()} == {
        f"caveat:case:{case_id}:{v}" for v in ("claim", "note", "dismiss", "remove", "escalate")}


async def test_claim_then_dismiss_with_a_reason_code(harness, fake):
    card, case_id = await queued_card(harness, fake)
    reply = await callback(fake, await fake.click_button(card, f"caveat:case:{case_id}:claim", user=fake.alice))
    assert reply.json["type"] == 7   # the card itself is updated
    assert f"Claimed by <@{fake.alice.id}>" in reply.json["data"]["embeds"][0]["fields"][-1]["value"]

    reply = await callback(fake, await fake.click_button(card, f"caveat:case:{case_id}:dismiss", user=fake.alice))
    assert reply.json["type"] == 4 and reply.json["data"]["flags"] == EPHEMERAL
    [menu] = [c for row in reply.json["data"]["components"] for c in row["components"]]
    assert menu["custom_id"] == f"caveat:reason:{case_id}:dismiss"
    assert [o["value"] for o in menu["options"]] == list(harness.bot.policy.community.reason_codes)

    since = fake.mark()
    picker = reply.response["resource"]["message"]
    reply = await callback(fake, await fake.choose(picker, menu["custom_id"], ["false_positive"], user=fake.alice))
    assert "dismiss with reason `false_positive`" in reply.json["data"]["content"]
    patch = await fake.wait_for_request("PATCH", rf"^/channels/{fake.mods.id}/messages/{card['id']}$", since=since)
    assert "Resolved: dismissed (false positive)** · reason `false_positive`" in patch.json["embeds"][0]["fields"][-1]["value"]
    assert patch.json["components"] == []
    actions = [(e["actor"], e["action"]) for e in await harness.store.audit_log(community=fake.guild_id, case_id=case_id)]
    assert (fake.alice.id, "claim") in actions and (fake.alice.id, "dismissed") in actions


async def test_second_moderator_is_refused_with_who_holds_the_case(harness, fake):
    card, case_id = await queued_card(harness, fake)
    await callback(fake, await fake.click_button(card, f"caveat:case:{case_id}:claim", user=fake.alice))
    # The claimed card offers Unclaim in place of Claim; every action by another moderator is refused.
    assert "Unclaim" in buttons(card) and "Claim" not in buttons(card)
    for verb in ("unclaim", "dismiss", "note"):
        reply = await callback(fake, await fake.click_button(card, f"caveat:case:{case_id}:{verb}", user=fake.bob))
        assert reply.json["data"]["flags"] == EPHEMERAL
        assert reply.json["data"]["content"] == f"Refused: case #{case_id} is claimed by <@{fake.alice.id}>."
    case = await harness.store.case(case_id, community=fake.guild_id)
    assert case["status"] == "claimed" and case["claimed_by"] == fake.alice.id


async def test_member_cannot_use_moderator_buttons(harness, fake):
    card, case_id = await queued_card(harness, fake)
    reply = await callback(fake, await fake.click_button(card, f"caveat:case:{case_id}:claim", user=fake.member))
    assert reply.json["data"]["flags"] == EPHEMERAL and "Manage Messages" in reply.json["data"]["content"]
    assert (await harness.store.case(case_id, community=fake.guild_id))["status"] == "open"


async def test_buttons_still_work_after_the_bot_restarts(harness, fake):
    card, case_id = await queued_card(harness, fake)
    await harness.restart()
    reply = await callback(fake, await fake.click_button(card, f"caveat:case:{case_id}:claim", user=fake.bob))
    assert reply.json["type"] == 7
    assert f"Claimed by <@{fake.bob.id}>" in reply.json["data"]["embeds"][0]["fields"][-1]["value"]


async def test_send_note_from_a_card_replies_once_under_the_post(harness, fake):
    card, case_id = await queued_card(harness, fake)
    post_id = (await harness.store.case(case_id, community=fake.guild_id))["message_id"]
    reply = await callback(fake, await fake.click_button(card, f"caveat:case:{case_id}:note", user=fake.alice))
    [note] = fake.find("POST", rf"^/channels/{fake.general.id}/messages$")
    assert str(note.json["message_reference"]["message_id"]) == post_id
    assert note.json["allowed_mentions"] == {"parse": [], "replied_user": False}
    assert note.json["embeds"][0]["footer"]["text"].startswith("Note ")
    assert "Resolved: caution note sent" in reply.json["data"]["embeds"][0]["fields"][-1]["value"]


async def test_remove_post_deletes_it_with_an_audit_reason(harness, fake):
    card, case_id = await queued_card(harness, fake, RISKY)
    reply = await callback(fake, await fake.click_button(card, f"caveat:case:{case_id}:remove", user=fake.alice))
    picker = reply.response["resource"]["message"]
    post_id = (await harness.store.case(case_id, community=fake.guild_id))["message_id"]
    # Discord echoes the deletion back as MESSAGE_DELETE; wait until the bot has handled that too.
    echoed = harness.bot.wait_for("caveat_post_handled", check=lambda mid, _: str(mid) == post_id, timeout=5)
    await callback(fake, await fake.choose(picker, f"caveat:reason:{case_id}:remove", ["dangerous_advice"], user=fake.alice))
    delete = await fake.wait_for_request("DELETE", rf"^/channels/{fake.general.id}/messages/{post_id}$")
    assert unquote(delete.headers["X-Audit-Log-Reason"]).startswith(f"Caveat case #{case_id}: dangerous_advice")
    await echoed
    case = await harness.store.case(case_id, community=fake.guild_id)
    assert case["resolution"] == "removed" and case["reason_code"] == "dangerous_advice"
    assert case["text"] is None   # the removed post's text is purged too


async def test_escalate_pings_on_call(harness, fake):
    card, case_id = await queued_card(harness, fake)
    since = fake.mark()
    await callback(fake, await fake.click_button(card, f"caveat:case:{case_id}:escalate", user=fake.alice))
    alert = await fake.wait_for_request("POST", rf"^/channels/{fake.mods.id}/messages$", since=since)
    assert alert.json["content"].startswith(f"<@&{fake.oncall_role}> Case #{case_id} was escalated")
    assert alert.json["allowed_mentions"]["roles"] == [int(fake.oncall_role)]


async def test_note_feedback_and_dispute_become_a_case(harness, fake):
    msg, outcome = await harness.post(RISKY)
    [note] = [r for r in fake.find("POST", rf"^/channels/{fake.general.id}/messages$")]
    note_msg = fake.messages[note.response["id"]]
    reply = await callback(fake, await fake.click_button(note_msg, f"caveat:fb:{outcome.decision_id}:helpful",
                                                         user=fake.other_member))
    assert reply.json["data"]["flags"] == EPHEMERAL
    assert await harness.store.feedback(outcome.decision_id) == {"helpful": 1}

    reply = await callback(fake, await fake.click_button(note_msg, f"caveat:fb:{outcome.decision_id}:dispute",
                                                         user=fake.member))
    assert reply.json["type"] == 9   # a modal asks why
    modal = reply.json["data"]
    field_id = modal["components"][0]["components"][0]["custom_id"]
    since = fake.mark()
    await fake.submit_modal(modal, {field_id: "I was quoting my surgeon's warning"}, user=fake.member,
                            channel=fake.general)
    card = await fake.wait_for_request("POST", rf"^/channels/{fake.mods.id}/messages$", since=since)
    embed = card.json["embeds"][0]
    assert "[dispute]" in embed["title"]
    assert any("I was quoting my surgeon's warning" in f["value"] for f in embed["fields"])
    assert (await harness.store.feedback(outcome.decision_id))["dispute"] == 1
