"""Slash commands end to end: /caveat test, queue, case, policy reload, mode, stats, and /caveat-forget-me."""
from __future__ import annotations

from policies.loader import load_policy

QUEUED = "I am going to stop my meds cold turkey"
RISKY = "Put the rapa cream right on the fresh surgical wound, it stops the scar"
CRISIS = "I want to kill myself tonight"
EPHEMERAL = 64


async def slash(fake, command, options=None, *, user):
    """Run a slash command and return the bot's callback request."""
    interaction = await fake.run_slash_command(command, options, user=user)
    return await fake.wait_for_request("POST", rf"^/interactions/{interaction['id']}/[^/]+/callback$")


async def test_slash_test_is_a_private_dry_run_with_the_full_explanation(harness, fake):
    reply = await slash(fake, "caveat test", {"text": RISKY}, user=fake.alice)
    data = reply.json["data"]
    assert reply.json["type"] == 4 and data["flags"] == EPHEMERAL
    embed = data["embeds"][0]
    assert embed["title"] == "Dry run: note_and_queue"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert "`rapa-wound` → risky_self_treatment w=0.6: 'rapa', 'surgical', 'wound'" in fields["Rules"]
    assert fields["Note `rapa-wounds`"].startswith("Rapamycin (sirolimus) and fresh wounds")
    assert "Scored by keyword rules only" in fields["Why"]
    assert "nothing was stored or posted" in embed["footer"]["text"]
    assert await harness.store.count_cases(community=fake.guild_id) == 0
    assert not fake.find("POST", r"^/channels/")


async def test_member_is_refused_moderator_commands(harness, fake):
    for command, options in (("caveat test", {"text": RISKY}), ("caveat queue", None), ("caveat stats", None),
                             ("caveat mode", {"mode": "shadow"}), ("caveat policy reload", None)):
        reply = await slash(fake, command, options, user=fake.member)
        assert reply.json["data"]["flags"] == EPHEMERAL
        assert "needs the Manage Messages permission" in reply.json["data"]["content"]
    refused = await harness.store.audit_log(community=fake.guild_id, action="command_refused")
    assert len(refused) == 5 and {e["actor"] for e in refused} == {fake.member.id}


async def test_queue_is_paginated_and_sorted(harness, fake):
    for i in range(11):
        await harness.post(f"{QUEUED} #{i}")
    _, crisis = await harness.post(CRISIS)
    reply = await slash(fake, "caveat queue", {"sort": "severity"}, user=fake.alice)
    embed = reply.json["data"]["embeds"][0]
    assert embed["title"] == "Open cases (12) · severity first" and embed["footer"]["text"] == "page 1 of 2"
    assert embed["description"].startswith(f"**#{crisis.case_id}** emergency · escalate")
    reply = await slash(fake, "caveat queue", {"sort": "oldest"}, user=fake.alice)
    assert reply.json["data"]["embeds"][0]["description"].startswith("**#1** risky_self_treatment · queue")
    nav = {c["label"]: c for row in reply.json["data"]["components"] for c in row["components"]}
    assert nav["◀ Previous"].get("disabled") is True
    page = reply.response["resource"]["message"]
    interaction = await fake.click_button(page, nav["Next ▶"]["custom_id"], user=fake.alice)
    reply = await fake.wait_for_request("POST", rf"^/interactions/{interaction['id']}/")
    embed = reply.json["data"]["embeds"][0]
    assert reply.json["type"] == 7 and embed["footer"]["text"] == "page 2 of 2"
    assert embed["description"].count("**#") == 2


async def test_case_command_shows_the_case_and_why(harness, fake):
    _, outcome = await harness.post(QUEUED)
    reply = await slash(fake, "caveat case", {"case_id": outcome.case_id}, user=fake.alice)
    embed = reply.json["data"]["embeds"][0]
    assert embed["title"].startswith(f"Case #{outcome.case_id}")
    assert any(f["name"] == "Why" and "stop-meds" in f["value"] for f in embed["fields"])
    reply = await slash(fake, "caveat case", {"case_id": 999}, user=fake.alice)
    assert reply.json["data"]["content"] == "No case #999 in this server."


async def test_policy_reload_refuses_an_invalid_policy_and_says_why(harness, fake, policy_dir):
    # Serve from a writable copy of the shipped policy so the test can edit it.
    harness.bot.policies.source = str(policy_dir)   # what --policy DIR configures
    harness.bot.apply_policy(load_policy(policy_dir))
    before = harness.bot.policy.version
    thresholds = policy_dir / "thresholds.yaml"
    good = thresholds.read_text()
    bad_line = next(n for n, line in enumerate(good.splitlines(), 1) if "value: 0.5" in line)
    thresholds.write_text(good.replace("value: 0.5", "value: 1.5", 1))
    reply = await slash(fake, "caveat policy reload", user=fake.alice)
    content = reply.json["data"]["content"]
    assert content.startswith(f"Policy NOT reloaded; still using `{before}`")
    assert f"thresholds.yaml:{bad_line}" in content
    assert harness.bot.pipeline.policy.version == before
    thresholds.write_text(good.replace("value: 0.3\n", "value: 0.35\n", 1))
    reply = await slash(fake, "caveat policy reload", user=fake.alice)
    after = harness.bot.pipeline.policy.version
    assert after != before and reply.json["data"]["content"].startswith(f"Policy reloaded: `{before}` → `{after}`")


async def test_shadow_mode_per_channel_records_without_posting(harness, fake):
    reply = await slash(fake, "caveat mode", {"mode": "shadow"}, user=fake.alice)
    assert "is now in **shadow** mode" in reply.json["data"]["content"]
    _, outcome = await harness.post(RISKY)
    assert outcome.shadow and outcome.note_blocked == "shadow mode"
    assert not fake.find("POST", rf"^/channels/{fake.general.id}/messages$")
    [card] = fake.find("POST", rf"^/channels/{fake.mods.id}/messages$")
    assert card.json["embeds"][0]["title"].startswith("[shadow] Case #")
    await slash(fake, "caveat mode", {"mode": "live"}, user=fake.alice)
    await harness.post(RISKY, author=fake.other_member)
    assert len(fake.find("POST", rf"^/channels/{fake.general.id}/messages$")) == 1


async def test_stats_show_notes_and_judged_precision(harness, fake):
    await harness.post(RISKY)
    reply = await slash(fake, "caveat stats", user=fake.alice)
    fields = {f["name"]: f["value"] for f in reply.json["data"]["embeds"][0]["fields"]}
    assert fields["Notes sent"] == "1"
    assert fields["Cases by label"] == "risky_self_treatment: 1"
    assert fields["Note precision (judged by moderators)"] == "not judged yet"


async def test_any_member_can_forget_me(harness, fake):
    msg, outcome = await harness.post(RISKY)
    reply = await slash(fake, "caveat-forget-me", user=fake.member)
    assert reply.json["data"]["flags"] == EPHEMERAL
    assert "no longer stores the text of your 1 post(s)" in reply.json["data"]["content"]
    assert (await harness.store.post(outcome.post_id, community=fake.guild_id))["text"] is None
