"""Slash commands: `/caveat queue|case|test|policy reload|mode|stats` for moderators, `/caveat-forget-me` for anyone.

Moderator commands are hidden from members by `default_member_permissions` (Manage Messages) AND checked on
the server, because a server owner can override the default in Server Settings > Integrations.
`forget-me` is a separate top-level command: Discord applies default_member_permissions to a whole command
tree, so a member-facing subcommand of `/caveat` would be hidden from members.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs import render
from bot.cogs.review import NO_PINGS
from bot.engine import Post
from bot.storage import CaseNotFound
from policies.loader import PolicyError

log = logging.getLogger("caveat.commands")
PAGE = 10
MOD_PERMS = discord.Permissions(manage_messages=True)
mod_only = app_commands.checks.has_permissions(manage_messages=True)


def queue_page_embed(cases: list[dict], total: int, page: int, sort: str) -> discord.Embed:
    """One page of the open-case list."""
    pages = max(1, -(-total // PAGE))
    lines = []
    for c in cases:
        who = f" · claimed by <@{c['claimed_by']}>" if c["status"] == "claimed" else ""
        jump = f" · [post]({c['url']})" if c.get("url") else ""
        lines.append(f"**#{c['id']}** {c.get('label') or 'no label'} · {c['action']} · {c['created_at'][:16]}{who}{jump}")
    embed = discord.Embed(title=f"Open cases ({total}) · {sort} first", description="\n".join(lines) or "No open cases.",
                          color=render.STATUS_COLOR["open"])
    embed.set_footer(text=f"page {page} of {pages}")
    return embed


class QueuePageButton(discord.ui.DynamicItem[discord.ui.Button], template=r"caveat:queue:(?P<sort>oldest|severity):(?P<page>\d+):(?P<dir>prev|next)"):
    """Previous / next page of `/caveat queue`: custom id `caveat:queue:<sort>:<page>:<prev|next>`."""

    def __init__(self, sort: str, page: int, direction: str, disabled: bool = False):
        super().__init__(discord.ui.Button(label="◀ Previous" if direction == "prev" else "Next ▶", disabled=disabled,
                                           custom_id=f"caveat:queue:{sort}:{page}:{direction}"))
        self.sort, self.page, self.direction = sort, page, direction

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        """Rebuild from the custom id."""
        return cls(match["sort"], int(match["page"]), match["dir"])

    async def callback(self, interaction: discord.Interaction) -> None:
        """Show the neighbouring page in place."""
        if not interaction.permissions.manage_messages:
            await interaction.response.send_message("Only moderators (Manage Messages) can see the queue.", ephemeral=True)
            return
        page = self.page + (1 if self.direction == "next" else -1)
        embed, view = await interaction.client.get_cog("Commands").queue_page(self.sort, page)
        await interaction.response.edit_message(embed=embed, view=view)


class Commands(commands.Cog):
    """The `/caveat` command group and `/caveat-forget-me`."""

    caveat = app_commands.Group(name="caveat", description="Caveat moderation tools", guild_only=True,
                                default_permissions=MOD_PERMS)
    policy_group = app_commands.Group(name="policy", description="Policy tools", parent=caveat)

    def __init__(self, bot):
        self.bot = bot
        self.store = bot.store

    async def cog_load(self) -> None:
        """Register the persistent page buttons."""
        self.bot.add_dynamic_items(QueuePageButton)

    async def cog_unload(self) -> None:
        """Unregister the page buttons."""
        self.bot.remove_dynamic_items(QueuePageButton)

    async def cog_app_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError):
        """Answer permission refusals in private instead of failing silently."""
        if isinstance(error, app_commands.MissingPermissions):
            await self.store.audit(str(interaction.user.id), "command_refused",
                                   detail={"command": interaction.command.qualified_name if interaction.command else None})
            await interaction.response.send_message(
                "This command is for moderators: it needs the Manage Messages permission.", ephemeral=True)

    async def queue_page(self, sort: str, page: int) -> tuple[discord.Embed, discord.ui.View]:
        """The embed and navigation buttons for one page of open cases."""
        total = await self.store.count_cases()
        pages = max(1, -(-total // PAGE))
        page = min(max(1, page), pages)
        cases = await self.store.cases(status="open", sort=sort, limit=PAGE, offset=(page - 1) * PAGE)
        view = discord.ui.View(timeout=None)
        view.add_item(QueuePageButton(sort, page, "prev", disabled=page <= 1))
        view.add_item(QueuePageButton(sort, page, "next", disabled=page >= pages))
        return queue_page_embed(cases, total, page, sort), view

    @caveat.command(name="queue", description="Open cases, oldest or most severe first")
    @mod_only
    async def queue(self, interaction: discord.Interaction, sort: Literal["severity", "oldest"] = "severity",
                    page: app_commands.Range[int, 1] = 1):
        """List open cases, paginated."""
        embed, view = await self.queue_page(sort, page)
        await interaction.response.send_message(embed=embed, view=view, ephemeral=True, allowed_mentions=NO_PINGS)

    @caveat.command(name="case", description="Show one case with its explanation")
    @mod_only
    async def case(self, interaction: discord.Interaction, case_id: int):
        """Show a case card privately."""
        try:
            case = await self.store.case(case_id)
        except CaseNotFound:
            await interaction.response.send_message(f"No case #{case_id}.", ephemeral=True)
            return
        embed = render.case_embed(case, self.bot.policy)
        why = (case.get("detail") or {}).get("why")
        if why:
            embed.add_field(name="Why", value=render.clip(why, 1024), inline=False)
        feedback = await self.store.feedback(case["decision_id"])
        if feedback:
            embed.add_field(name="Member feedback", value=", ".join(f"{k}: {v}" for k, v in feedback.items()))
        await interaction.response.send_message(embed=embed, ephemeral=True, allowed_mentions=NO_PINGS)

    @caveat.command(name="test", description="Dry run: what would Caveat do with this text? Nothing is stored")
    @mod_only
    async def test(self, interaction: discord.Interaction, text: app_commands.Range[str, 1, 2000]):
        """Assess text without storing or posting anything; show the full explanation privately."""
        post = Post("discord", f"test-{interaction.id}", str(interaction.channel_id), str(interaction.user.id), text,
                    community_id=str(interaction.guild_id or ""))
        decision = await self.bot.pipeline.decide(post)
        await interaction.response.send_message(embed=render.decision_embed(text, decision), ephemeral=True)

    @policy_group.command(name="reload", description="Reload the policy files; an invalid policy is refused")
    @mod_only
    async def policy_reload(self, interaction: discord.Interaction):
        """Reload policy from disk, keeping the old one (and saying why) when the new one is invalid."""
        old = self.bot.policy.version
        try:
            # YAML parsing and validation are blocking file work: keep them off the event loop.
            new = await asyncio.to_thread(self.bot.policies.reload)
        except PolicyError as exc:
            issues = "\n".join(str(i) for i in exc.issues[:15])
            await self.store.audit(str(interaction.user.id), "policy_reload_refused",
                                   detail={"issues": len(exc.issues), "kept": old})
            await interaction.response.send_message(
                f"Policy NOT reloaded; still using `{old}`. Problems:\n```\n{render.clip(issues, 1700)}\n```",
                ephemeral=True)
            return
        self.bot.pipeline.set_policy(new)
        await self.store.audit(str(interaction.user.id), "policy_reload", detail={"from": old, "to": new.version})
        await interaction.response.send_message(
            f"Policy reloaded: `{old}` → `{new.version}` ({len(new.rules)} rules, {len(new.notes)} notes).", ephemeral=True)

    @caveat.command(name="mode", description="Shadow mode (record only) or live mode for a channel")
    @mod_only
    async def mode(self, interaction: discord.Interaction, mode: Literal["shadow", "live"],
                   channel: discord.TextChannel | discord.ForumChannel | discord.Thread | None = None):
        """Switch a channel (default: this one) between shadow and live."""
        channel_id = channel.id if channel else interaction.channel_id
        await self.store.set_setting(f"channel:{channel_id}", "shadow_mode", mode == "shadow")
        await self.store.audit(str(interaction.user.id), "mode_set", detail={"channel_id": str(channel_id), "mode": mode})
        what = "records decisions only; no public notes" if mode == "shadow" else "posts notes publicly"
        await interaction.response.send_message(f"<#{channel_id}> is now in **{mode}** mode: Caveat {what}.",
                                                ephemeral=True)

    @caveat.command(name="stats", description="Cases by label and outcome, notes sent, judged note precision")
    @mod_only
    async def stats(self, interaction: discord.Interaction):
        """Show moderation statistics."""
        await interaction.response.send_message(embed=render.stats_embed(await self.store.stats()), ephemeral=True)

    @app_commands.command(name="caveat-forget-me", description="Remove the text of your posts from Caveat's records")
    @app_commands.guild_only()
    async def forget_me(self, interaction: discord.Interaction):
        """Any member: purge their stored post text everywhere; anonymized counts stay."""
        n = await self.store.forget_user(str(interaction.user.id), actor=str(interaction.user.id))
        await interaction.response.send_message(
            f"Done: Caveat no longer stores the text of your {n} post(s). Anonymized counts are kept.", ephemeral=True)


async def setup(bot) -> None:
    """Extension entry point."""
    await bot.add_cog(Commands(bot))
