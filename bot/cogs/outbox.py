"""Carries out on Discord what moderators decided anywhere (dashboard or buttons), from the storage outbox,
and re-alerts the on-call role about emergencies nobody has claimed.

The outbox rows are written in the same transaction as the case change, so a note the dashboard asked for
is posted even if the bot was offline at the time: it is picked up on the next poll.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import cast

import discord
from discord.ext import commands, tasks

from bot.cogs import render
from bot.cogs.listeners import reply_nonce
from bot.cogs.review import NO_PINGS, note_view
from bot.storage import CaseNotFound
from bot.storage.clock import iso, utcnow
from bot.storage.contract import Storage
from bot.storage.rows import ActionRow, CaseRow

log = logging.getLogger("caveat.outbox")


class Outbox(commands.Cog):
    """Polls the outbox for Discord actions and the open emergencies for re-alerts."""

    def __init__(self, bot):
        self.bot = bot
        self.store: Storage = bot.store
        self._lock = asyncio.Lock()

    async def cog_load(self) -> None:
        """Start both loops at the bot's configured intervals."""
        self.poll.change_interval(seconds=self.bot.outbox_seconds)
        self.realert.change_interval(seconds=self.bot.realert_check_seconds)
        self.takeover.change_interval(seconds=self.bot.heartbeat_seconds)
        self.poll.start()
        self.realert.start()
        self.takeover.start()

    async def cog_unload(self) -> None:
        """Stop the loops and wait for a run in progress, so nothing writes after storage closes."""
        for loop in (self.poll, self.realert, self.takeover):
            task = loop.get_task()
            loop.cancel()
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        async with self._lock:
            pass

    @tasks.loop(seconds=2)
    async def poll(self) -> None:
        """Carry out pending actions (those the dashboard queued)."""
        await self.run_pending()

    @poll.before_loop
    async def _poll_ready(self) -> None:
        await self.bot.wait_until_ready()

    @poll.error
    async def _poll_error(self, exc: BaseException) -> None:
        log.error("outbox poll stopped: %s; restarting it", type(exc).__name__, exc_info=exc)
        self.poll.restart()

    def _communities(self) -> list[str]:
        """The servers this process serves (its shards' guilds): it carries out and re-alerts for no others."""
        return [str(guild.id) for guild in self.bot.guilds]

    async def run_pending(self) -> dict[int, str]:
        """Take every pending Discord action and carry it out; returns {action id: result}."""
        async with self._lock:
            results = {}
            for row in await self.store.take_actions("discord", communities=self._communities()):
                try:
                    result = await self._run(row)
                except discord.HTTPException as exc:
                    result = f"failed: HTTP {exc.status}"
                except CaseNotFound:
                    result = "skipped: case not found"
                await self.store.finish_action(row["id"], result)
                results[row["id"]] = result
            return results

    async def _run(self, row: ActionRow) -> str:
        community, case_id = row["community_id"], row["case_id"]
        review = self.bot.get_cog("Review")
        if row["kind"] == "refresh_card":
            await review.publish_card(community, case_id)
            return "done"
        if row["kind"] == "alert":
            return "done" if await review.escalation_alert(community, case_id, row["actor"]) else "skipped: no channel"
        case = await self.store.case(cast(int, case_id), community=community)  # CaseService names the case
        if row["kind"] == "post_note":
            return await self._post_note(row, case)
        if row["kind"] == "delete_post":
            return await self._delete_post(row, case)
        return f"skipped: unknown action {row['kind']}"

    async def _post_note(self, row: ActionRow, case: CaseRow) -> str:
        """Post the note a moderator chose under the member's post; give the reservation back if Discord refuses."""
        detail, community = row["detail"], case["community_id"]
        note = self.bot.cases.proposed_note(case)
        if note is None or note.id != detail.get("note_id") or case.get("deleted_at"):
            reason = "post deleted" if case.get("deleted_at") else "note no longer in the policy"
            await self._release(row, case, reason)
            return f"skipped: {reason}"
        target = self.bot.get_partial_messageable(int(case["channel_id"])).get_partial_message(int(case["message_id"]))
        try:
            msg = await target.reply(embed=render.note_embed(note), view=note_view(case["decision_id"]),
                                     allowed_mentions=NO_PINGS, mention_author=False,
                                     nonce=reply_nonce(case["post_id"], "note"))
        except discord.HTTPException as exc:
            await self._release(row, case, f"HTTP {exc.status}")
            raise
        async with self.store.transaction():
            await self.store.set_reply_message(case["post_id"], "note", str(msg.id))
            await self.store.audit(row["actor"], "note_sent", community=community, case_id=case["id"],
                                   post_id=case["post_id"], detail={"note_id": note.id, "message_id": str(msg.id)})
        return "done"

    async def _release(self, row: ActionRow, case: CaseRow, reason: str) -> None:
        async with self.store.transaction():
            await self.store.release_reply(case["post_id"], "note")
            if row["detail"].get("cooldown_id"):
                await self.store.release_note(row["detail"]["cooldown_id"])
            await self.store.audit(row["actor"], "note_failed", community=case["community_id"], case_id=case["id"],
                                   post_id=case["post_id"], detail={"reason": reason})

    async def _delete_post(self, row: ActionRow, case: CaseRow) -> str:
        """Delete the member's post with the reason in Discord's audit log."""
        code, mod = row["detail"].get("reason_code"), row["actor"]
        try:
            # The low-level call is the one that carries an audit-log reason (X-Audit-Log-Reason).
            await self.bot.http.delete_message(int(case["channel_id"]), int(case["message_id"]),
                                               reason=f"Caveat case #{case['id']}: {code} (moderator {mod})")
        except discord.NotFound:
            result = "done: already gone"
        except discord.HTTPException as exc:
            await self.store.audit(mod, "post_remove_failed", community=case["community_id"], case_id=case["id"],
                                   detail={"status": exc.status})
            raise
        else:
            result = "done"
        await self.store.audit(mod, "post_removed", community=case["community_id"], case_id=case["id"],
                               post_id=case["post_id"])
        return result

    @tasks.loop(seconds=10)
    async def takeover(self) -> None:
        """Heartbeat; then finish what a dead process (no heartbeat for `takeover_after_seconds`) reserved on this
        process's servers and never posted: its crisis replies, caution notes and case cards."""
        now = utcnow()
        await self.store.heartbeat(self.bot.instance, now=now)
        dead_before = now - timedelta(seconds=self.bot.takeover_after_seconds)
        await self.store.forget_dead_instances(dead_before=now - timedelta(days=1))
        listeners = self.bot.get_cog("Listeners")
        for row in await self.store.orphaned_posts(me=self.bot.instance, dead_before=dead_before,
                                                   communities=self._communities()):
            if not await self.store.take_over(row["post_id"], dead=row["handled_by"], me=self.bot.instance):
                continue  # another process took it first
            log.warning("post %s: its process stopped before posting %s; posting now", row["post_id"],
                        ", ".join(row["replies"] + (["card"] if row["card_missing"] else [])))
            await self.store.audit("caveat", "taken_over", community=row["community_id"], post_id=row["post_id"],
                                   case_id=row["case_id"], detail={"from": row["handled_by"], "replies": row["replies"],
                                                                   "card": row["card_missing"]})
            await listeners.finish(row)

    @takeover.before_loop
    async def _takeover_ready(self) -> None:
        await self.bot.wait_until_ready()

    @takeover.error
    async def _takeover_error(self, exc: BaseException) -> None:
        log.error("takeover loop stopped: %s; restarting it", type(exc).__name__, exc_info=exc)
        self.takeover.restart()

    @tasks.loop(seconds=30)
    async def realert(self) -> None:
        """Ping on-call again about each emergency nobody claimed within the server's re-alert delay."""
        now = utcnow()
        configs = {}
        for row in await self.store.unattended_emergencies(older_than=now, communities=self._communities()):
            community = row["community_id"]
            if community not in configs:
                configs[community] = await self.bot.community_config(community)
            minutes = configs[community].realert_minutes
            last = row["realerted_at"] or row["created_at"]
            if not minutes or last > iso(now - timedelta(minutes=minutes)):
                continue
            if await self.store.mark_realerted(row["id"], now=now):
                try:
                    await self.bot.get_cog("Review").escalation_alert(community, row["id"], "caveat", realert=True)
                except discord.HTTPException as exc:
                    log.warning("could not re-alert case %s: HTTP %s", row["id"], exc.status)

    @realert.before_loop
    async def _realert_ready(self) -> None:
        await self.bot.wait_until_ready()

    @realert.error
    async def _realert_error(self, exc: BaseException) -> None:
        log.error("re-alert loop stopped: %s; restarting it", type(exc).__name__, exc_info=exc)
        self.realert.restart()


async def setup(bot) -> None:
    """Extension entry point."""
    await bot.add_cog(Outbox(bot))
