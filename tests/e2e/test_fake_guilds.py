"""The fake Discord's second guild and forum posts, checked by what the real discord.py client SEES.

These tests pin the fake itself (guild scoping of events and interactions, forum posts as Discord makes them), not
Caveat's behaviour: the bot handles the posts as usual, and each test waits for it to finish before tearing down.
"""
from __future__ import annotations

import asyncio

import discord
import pytest

from fake_discord import MEMBER_PERMS

BENIGN = "Does anyone have a good recipe for a low-salt soup?"


def handled(harness, message_id):
    """A waiter for Caveat to be done with a post (so nothing runs during teardown)."""
    return harness.bot.wait_for("caveat_post_handled", check=lambda mid, _: mid == int(message_id), timeout=5)


async def test_the_bot_sees_both_guilds_with_their_own_channels_roles_and_members(harness, fake):
    bot = harness.bot
    assert sorted(g.id for g in bot.guilds) == sorted(int(g.id) for g in (fake.g1, fake.g2))
    g1, g2 = bot.get_guild(int(fake.g1.id)), bot.get_guild(int(fake.g2.id))
    assert fake.g1.id == fake.guild_id and fake.g1.general is fake.general and fake.g1.mods is fake.mods
    assert sorted(c.name for c in g1.channels) == ["ask-the-community", "general", "moderators"]
    assert sorted(c.name for c in g2.channels) == ["general", "mod-team", "patient-questions"]
    assert g2.get_channel(int(fake.g2.general.id)).name == "general"        # same name as guild 1's, other id
    assert g1.get_channel(int(fake.g2.general.id)) is None and fake.g2.general.id != fake.general.id
    assert isinstance(g2.get_channel(int(fake.g2.forum.id)), discord.ForumChannel)
    [thread] = g2.threads
    assert thread.id == int(fake.g2.thread.id) and thread.parent.id == int(fake.g2.forum.id)
    assert g2.get_role(int(fake.g2.oncall_role)).name == "On-call" and g1.get_role(int(fake.g2.oncall_role)) is None
    assert g2.get_role(int(fake.g2.mod_role)).permissions.manage_messages
    # Without the members intent discord.py caches no members but the bot itself: who is a member (and with which
    # roles) reaches the bot only on each message's and interaction's member object.
    assert g1.member_count == 5 and g2.member_count == 3
    assert g2.get_member(int(fake.carol.id)) is None and g2.me is not None and g1.me is not None
    assert g2.owner_id == int(fake.carol.id) and g1.owner_id == int(fake.alice.id)


async def test_a_message_in_guild_2_arrives_with_guild_2_and_its_member(harness, fake):
    seen = harness.bot.wait_for("message", check=lambda m: m.author.id == int(fake.dave.id), timeout=5)
    done = handled(harness, msg_id := fake.snowflake())
    msg = await fake.send_message(BENIGN, author=fake.dave, channel=fake.g2.general, message_id=msg_id)
    message = await seen
    await done
    assert msg["guild_id"] == fake.g2.id
    assert message.guild.id == int(fake.g2.id) and message.channel.id == int(fake.g2.general.id)
    assert isinstance(message.author, discord.Member) and message.author.guild.id == int(fake.g2.id)
    # Edits and deletes carry guild 2 as well (harness.edit/delete wait for Caveat to be done with them).
    edited = harness.bot.wait_for("raw_message_edit", timeout=5)
    msg, _ = await harness.edit(msg, BENIGN + " (edited)")
    assert (await edited).guild_id == int(fake.g2.id)
    deleted = harness.bot.wait_for("raw_message_delete", timeout=5)
    await harness.delete(msg)
    assert (await deleted).guild_id == int(fake.g2.id)


async def test_what_the_bot_posts_in_guild_2_lands_there_with_guild_2(harness, fake):
    seen = harness.bot.wait_for("message", check=lambda m: m.author.id == harness.bot.user.id, timeout=5)
    sent = await harness.bot.get_channel(int(fake.g2.mods.id)).send("hello mod-team")
    echoed = await seen
    [stored] = fake.bot_messages(fake.g2.mods)
    assert stored["id"] == str(sent.id) and stored["guild_id"] == fake.g2.id and stored["content"] == "hello mod-team"
    assert echoed.guild.id == int(fake.g2.id) and not fake.bot_messages(fake.mods)


async def test_a_forum_post_arrives_as_a_thread_in_the_forum(harness, fake):
    title = "Sirolimus and wound healing after surgery?"
    seen = harness.bot.wait_for("message", check=lambda m: m.content == BENIGN, timeout=5)
    created = harness.bot.wait_for("thread_create", timeout=5)
    done = handled(harness, thread_id := fake.snowflake())
    msg = await fake.create_forum_post(title, BENIGN, author=fake.dave, forum=fake.g2.forum, thread_id=thread_id)
    message, thread = await seen, await created
    await done
    assert msg["id"] == msg["channel_id"] == thread_id and msg["guild_id"] == fake.g2.id
    assert isinstance(message.channel, discord.Thread) and message.channel is thread
    assert message.id == message.channel.id == int(thread_id)
    assert message.channel.name == title and message.channel.owner_id == int(fake.dave.id)
    assert isinstance(message.channel.parent, discord.ForumChannel)
    assert message.channel.parent_id == message.channel.parent.id == int(fake.g2.forum.id)
    assert message.guild.id == int(fake.g2.id) and message.guild.get_thread(int(thread_id)) is thread
    assert message.channel.starter_message is message   # the starter message is in the message cache
    # The thread is a Channel of the fake now: GET /channels/{id}, and the bot's reply lands in the thread.
    assert fake.channel(thread_id).name == title and fake.guild_of(thread_id) is fake.g2
    fetched = await harness.bot.fetch_channel(int(thread_id))
    assert isinstance(fetched, discord.Thread) and fetched.parent_id == int(fake.g2.forum.id)
    reply = await message.reply("a reply")
    [stored] = fake.bot_messages(fake.channel(thread_id))
    assert stored["id"] == str(reply.id) and stored["message_reference"]["guild_id"] == fake.g2.id


async def test_a_forum_post_in_guild_1_defaults(harness, fake):
    done = handled(harness, thread_id := fake.snowflake())
    msg = await fake.create_forum_post("Question", BENIGN, thread_id=thread_id)
    await done
    thread = harness.bot.get_guild(int(fake.guild_id)).get_thread(int(thread_id))
    assert msg["author"]["id"] == fake.member.id and thread.parent.id == int(fake.forum.id)


async def test_interactions_carry_the_guild_and_the_permissions_there(harness, fake):
    async def interaction_by(user, channel):
        seen = harness.bot.wait_for("interaction", check=lambda i: i.user.id == int(user.id), timeout=5)
        payload = await fake.run_slash_command("caveat test", {"text": BENIGN}, user=user, channel=channel)
        interaction = await seen
        await fake.wait_for_request("POST", rf"^/interactions/{payload['id']}/[^/]+/callback$")
        return interaction

    carol = await interaction_by(fake.carol, fake.g2.general)
    assert carol.guild_id == int(fake.g2.id) and carol.channel.id == int(fake.g2.general.id)
    assert carol.permissions.manage_messages and isinstance(carol.user, discord.Member)
    assert [r.id for r in carol.user.roles if not r.is_default()] == [int(fake.g2.mod_role)]

    member = await interaction_by(fake.member, fake.general)
    assert member.guild_id == int(fake.guild_id) and not member.permissions.manage_messages

    # Carol joins guild 1 as a plain member: her Manage Messages stays in guild 2.
    fake.add_member(fake.g1, fake.carol)
    carol_in_1 = await interaction_by(fake.carol, fake.general)
    assert carol_in_1.guild_id == int(fake.guild_id) and not carol_in_1.permissions.manage_messages
    assert fake.carol.permissions_in(fake.g2.id) & (1 << 13) and fake.carol.permissions_in(fake.g1.id) == MEMBER_PERMS


async def test_a_card_button_in_guild_2_carries_guild_2(harness, fake):
    sent = await harness.bot.get_channel(int(fake.g2.mods.id)).send("card")
    card = fake.messages[str(sent.id)]
    seen = harness.bot.wait_for("interaction", timeout=5)
    await fake.click_button(card, "not-a-caveat-button", user=fake.carol)
    interaction = await seen
    assert interaction.guild_id == int(fake.g2.id) and interaction.message.id == sent.id
    assert interaction.permissions.manage_messages


def test_the_fake_refuses_what_discord_would_never_deliver():
    from fake_discord import FakeDiscord
    fake = FakeDiscord()
    with pytest.raises(ValueError, match="not a member"):
        fake.message_payload(fake.general, fake.dave, "hi")        # dave is in guild 2 only
    with pytest.raises(ValueError, match="not a member"):
        fake.carol.permissions_in(fake.g1.id)
    with pytest.raises(ValueError, match="not a forum"):
        asyncio.run(fake.create_forum_post("t", "c", forum=fake.general))
    assert fake.channel(fake.g2.thread.id) is fake.g2.thread and fake.guild_of(fake.g2.general) is fake.g2
