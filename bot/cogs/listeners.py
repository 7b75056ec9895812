"""Members' side: new, edited and deleted posts go through the Pipeline; notes, crisis replies and cards follow.

After each post is handled the cog dispatches `caveat_post_handled(message_id, outcome)` so other
extensions (and the end-to-end tests) can react once Caveat is done with a post.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import discord
from discord.ext import commands

from bot.cogs import render
from bot.cogs.review import NO_PINGS, note_view
from bot.engine import Post
from bot.pipeline import Outcome, has_platform_work
from bot.storage.contract import Storage

log = logging.getLogger("caveat.listeners")


def reply_nonce(post_id: int, kind: str) -> str:
    """The same nonce for every attempt at one reply: Discord (enforce_nonce) keeps the first message it made."""
    return f"cv{post_id}{kind[0]}"


class Listeners(commands.Cog):
    """Turns Discord message events into Posts and acts on the Pipeline's Outcome."""

    def __init__(self, bot):
        self.bot = bot
        self.store: Storage = bot.store
        self._retries: set[asyncio.Task] = set()
        self._retrying: set[int] = set()   # posts whose crisis reply is being retried in the background

    async def cog_unload(self) -> None:
        """Stop background crisis-reply retries (a restart re-reads nothing of them: the audit log has them)."""
        for task in self._retries:
            task.cancel()

    def _exempt(self, channel, author) -> bool:
        """Exempt channels (by id or name; a thread inherits its parent's) and exempt roles (id or name)."""
        community = self.bot.policy.community
        names = set()
        for ch in (channel, getattr(channel, "parent", None)):
            if ch is not None:
                names.update({str(ch.id), getattr(ch, "name", None)})
        if getattr(channel, "parent_id", None):
            names.add(str(channel.parent_id))
        if names & set(community.exempt_channels):
            return True
        roles = set()
        for role in getattr(author, "roles", ()):
            roles.update({str(role.id), role.name})
        return bool(roles & set(community.exempt_roles))

    @staticmethod
    def _text(message: discord.Message) -> str:
        """What the member wrote. A forum post's first message is read with its title: the title is part of it
        (a risky title with "see title" as the body must still be caught)."""
        channel = message.channel
        if isinstance(channel, discord.Thread) and isinstance(channel.parent, discord.ForumChannel) \
                and message.id == channel.id and channel.name:
            return f"{channel.name}\n\n{message.content}"
        return message.content

    @staticmethod
    def parents(channel) -> tuple[str, ...]:
        """The channels a thread inherits its settings from: its parent channel or forum."""
        parent_id = getattr(channel, "parent_id", None)
        return (str(parent_id),) if parent_id else ()

    async def _post(self, message: discord.Message) -> Post:
        # The locale comes from the server's settings (Pipeline fills it in).
        if message.guild is None:  # _ignored drops direct messages before a post is built
            raise ValueError("a direct message is not a community post")
        return Post(platform="discord", message_id=str(message.id), channel_id=str(message.channel.id),
                    author_id=str(message.author.id), text=self._text(message),
                    community_id=str(message.guild.id), author_name=str(message.author),
                    channel_name=getattr(message.channel, "name", "") or "", created_at=message.created_at,
                    url=message.jump_url)

    def _ignored(self, message: discord.Message) -> bool:
        # Never answer bots or webhooks (no loops), DMs, or empty posts; honour exemptions from policy.
        return (message.guild is None or message.author.bot or message.webhook_id is not None
                or not self._text(message).strip() or self._exempt(message.channel, message.author))

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """Assess a new post (threads and forum posts included) and act on the outcome."""
        if self._ignored(message):
            return
        outcome = None
        try:
            with self.bot.handling():  # a stopping bot waits for this before closing storage
                post = await self._post(message)
                outcome = await self.bot.pipeline.handle(post, parents=self.parents(message.channel))
                if not outcome.duplicate:
                    await self._act(message, post, outcome)
                    if has_platform_work(outcome):
                        await self._done(outcome.post_id)
        finally:
            self.bot.dispatch("caveat_post_handled", message.id, outcome)

    @commands.Cog.listener()
    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        """Re-assess an edited post; the case follows, a second note is never sent.

        The raw event is used (not on_message_edit) so edits of posts older than the message cache, or from
        before a restart, are handled too.
        """
        message = payload.message
        if payload.guild_id is None or "content" not in payload.data or self._ignored(message):
            return
        outcome = None
        try:
            with self.bot.handling():
                post = await self._post(message)
                outcome = await self.bot.pipeline.handle_edit(post, parents=self.parents(message.channel))
                if outcome is not None and not outcome.duplicate:
                    await self._act(message, post, outcome)
                    if has_platform_work(outcome):
                        await self._done(outcome.post_id)
        finally:
            self.bot.dispatch("caveat_post_handled", message.id, outcome)

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        """The member deleted a post: purge its stored text, close its cases, update their cards, remove Caveat's reply."""
        with self.bot.handling():
            await self._deleted(payload)

    async def _deleted(self, payload: discord.RawMessageDeleteEvent) -> None:
        stored = await self.store.post_by_message("discord", str(payload.message_id))
        if stored is None:
            return
        community = stored["community_id"]
        open_cases = await self.store.cases(community=community, status="open", post_id=stored["id"],
                                            include_replayed=True, limit=500)
        replies = await self.store.replies(stored["id"])
        await self.bot.pipeline.handle_delete("discord", str(payload.message_id))
        await self._remove_replies(payload.channel_id, community, stored["id"], replies)
        review = self.bot.get_cog("Review")
        for case in open_cases:
            await review.publish_card(community, case["id"])
        self.bot.dispatch("caveat_post_handled", payload.message_id, None)

    async def _remove_replies(self, channel_id: int, community: str, post_id: int,
                              replies: dict[str, str | None]) -> None:
        """Take down Caveat's public note or crisis reply under a deleted post: left alone it would show what
        the member wrote about. A reply that is already gone, or that cannot be removed, is audited, not retried."""
        channel = self.bot.get_partial_messageable(channel_id)
        for kind, message_id in replies.items():
            if not message_id:
                continue
            detail: dict[str, object]
            try:
                await channel.get_partial_message(int(message_id)).delete()
                event, detail = f"{kind}_removed", {"reason": "post deleted by its author"}
            except discord.NotFound:
                event, detail = f"{kind}_removed", {"reason": "post deleted by its author", "already_gone": True}
            except discord.HTTPException as exc:
                log.warning("could not remove the %s under deleted post %s: HTTP %s", kind, post_id, exc.status)
                event, detail = f"{kind}_remove_failed", {"status": exc.status}
            await self.store.audit("caveat", event, community=community, post_id=post_id, detail=detail)

    async def _act(self, message: discord.Message, post: Post, outcome) -> None:
        """Post the reply the Pipeline reserved and the case card. For a member in crisis the moderators are
        alerted FIRST, and the alert says truthfully whether the crisis reply went out."""
        d = outcome.decision
        if outcome.reply == "resources":
            await self._crisis(message, post, outcome, render.resources_embed(d.resources), card=True)
            return
        if outcome.reply == "note" and d.note is not None:
            await self._reply(message, post, outcome, embed=render.note_embed(d.note),
                              view=note_view(outcome.decision_id))
        if outcome.case_id is not None:
            await self._card(post, outcome, alert=d.action == "escalate" and not outcome.replayed,
                             status="not_sent" if d.action == "escalate" else None)

    async def _crisis(self, message, post: Post, outcome, embed, *, card: bool) -> None:
        """Alert the moderators first (when `card`), then post the crisis reply; retries go on in the background."""
        if card:
            await self._card(post, outcome, alert=True, status="sending")
        error = "the channel is gone" if message is None else await self._send_resources(message, post, outcome,
                                                                                           embed)
        if error is None:
            await self._alert_status(post, outcome, "delivered")
        elif message is None:
            await self.bot.pipeline.reply_failed(outcome, error)
            await self._alert_status(post, outcome, "failed", error)
        else:
            await self._alert_status(post, outcome, "retrying", error)
            self._retrying.add(outcome.post_id)
            task = asyncio.create_task(self._retry_resources(message, post, outcome, embed, error))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)

    async def _done(self, post_id: int) -> None:
        """This process is through with the post (unless its crisis reply is still being retried): were it to die
        now, nobody needs to take the post over."""
        if post_id not in self._retrying:
            await self.store.release_post(post_id, self.bot.instance)

    async def finish(self, row: dict) -> None:
        """Post what a dead process reserved for a post of this process's servers and never posted: the crisis
        reply (moderators alerted first), the caution note, the case card. Each send carries a nonce fixed per post
        and kind, so Discord drops a copy the dead process did post but could not record."""
        post_id, community = row["post_id"], row["community_id"]
        decision = await self.store.latest_decision(post_id)
        if decision is None:
            return
        post = Post("discord", row["message_id"], row["channel_id"], row["author_id"], "", community_id=community)
        outcome = Outcome(post_id, decision["id"], None, case_id=row["case_id"], community_id=community)
        channel = self.bot.get_channel(int(row["channel_id"]))
        message = channel.get_partial_message(int(row["message_id"])) \
            if channel is not None and hasattr(channel, "get_partial_message") else None
        policy = self.bot.policy
        if "resources" in row["replies"]:
            config = await self.bot.community_config(community)
            crisis = policy.community.crisis_resources
            embed = render.resources_embed(crisis.get(config.locale, crisis[policy.community.default_locale]))
            await self._crisis(message, post, replace(outcome, reply="resources"), embed, card=row["card_missing"])
            await self._done(post_id)
            return
        if "note" in row["replies"]:
            noted = replace(outcome, reply="note")
            note = policy.note(decision["note_id"]) if decision["note_id"] else None
            if decision["note_id"] is None:
                log.warning("post %s: a note is reserved but its decision names none; left alone", post_id)
            elif note is None or message is None:
                await self.bot.pipeline.reply_failed(noted, "the note was withdrawn" if message else "channel gone")
            else:
                await self._reply(message, post, noted, embed=render.note_embed(note), view=note_view(decision["id"]))
        if row["card_missing"]:
            escalate = decision["action"] == "escalate"
            status = None
            if escalate:
                status = "delivered" if (await self.store.replies(post_id)).get("resources") else "not_sent"
            await self._card(post, outcome, alert=escalate, status=status)
        await self._done(post_id)

    async def _card(self, post: Post, outcome, *, alert: bool, status: str | None) -> None:
        """Post the case card; the case is stored either way, and a failed card must not hide the failure."""
        if outcome.case_id is None:
            return
        try:
            await self.bot.get_cog("Review").publish_card(post.community_id, outcome.case_id, alert=alert,
                                                          crisis_status=status)
        except discord.HTTPException as exc:
            log.warning("could not post the card of case %s: HTTP %s", outcome.case_id, exc.status)
            await self.store.audit("caveat", "case_card_failed", community=post.community_id,
                                   case_id=outcome.case_id, detail={"status": exc.status, "alert": alert})

    async def _alert_status(self, post: Post, outcome, status: str, error: str | None = None) -> None:
        if outcome.case_id is None:
            return
        try:
            await self.bot.get_cog("Review").update_alert(post.community_id, outcome.case_id, status, error)
        except discord.HTTPException as exc:
            log.warning("could not update the alert of case %s: HTTP %s", outcome.case_id, exc.status)

    async def _send_resources(self, message: discord.Message, post: Post, outcome, embed) -> str | None:
        """One attempt at the crisis reply; None when Discord accepted it, else the error (the reservation is
        kept while retries remain)."""
        try:
            sent = await message.reply(embed=embed, allowed_mentions=NO_PINGS, mention_author=False,
                                       nonce=reply_nonce(outcome.post_id, "resources"))
        except discord.HTTPException as exc:
            log.warning("could not post the crisis resources for post %s: HTTP %s", post.key, exc.status)
            await self.store.audit("caveat", "resources_attempt_failed", community=post.community_id,
                                   post_id=outcome.post_id, case_id=outcome.case_id,
                                   detail={"error": f"HTTP {exc.status}"})
            return f"HTTP {exc.status}"
        await self.bot.pipeline.reply_sent(post, outcome, str(sent.id))
        return None

    async def _retry_resources(self, message, post: Post, outcome, embed, error: str) -> None:
        """Keep trying the crisis reply in the background; the alert follows each outcome."""
        try:
            for delay in self.bot.crisis_retry_delays:
                await asyncio.sleep(delay)
                failure = await self._send_resources(message, post, outcome, embed)
                if failure is None:
                    await self._alert_status(post, outcome, "delivered")
                    break
                error = failure
            else:
                await self.bot.pipeline.reply_failed(outcome, error)
                await self._alert_status(post, outcome, "failed", error)
        finally:  # cancelled at shutdown: the post stays this process's, and is taken over once it is gone
            self._retrying.discard(outcome.post_id)
        await self._done(outcome.post_id)

    async def _reply(self, message: discord.Message, post: Post, outcome, **kwargs) -> bool:
        """Post the reserved reply; True when Discord accepted it."""
        try:
            sent = await message.reply(allowed_mentions=NO_PINGS, mention_author=False,
                                       nonce=reply_nonce(outcome.post_id, outcome.reply), **kwargs)
        except discord.HTTPException as exc:
            log.warning("could not post the %s for post %s: HTTP %s", outcome.reply, post.key, exc.status)
            await self.bot.pipeline.reply_failed(outcome, f"HTTP {exc.status}")
            return False
        await self.bot.pipeline.reply_sent(post, outcome, str(sent.id))
        return True


async def setup(bot) -> None:
    """Extension entry point."""
    await bot.add_cog(Listeners(bot))
