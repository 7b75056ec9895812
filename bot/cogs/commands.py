"""Slash commands: `/caveat queue|case|test|policy reload|mode|stats` for moderators, `/caveat-forget-me` for anyone.

Moderator commands are hidden from members by `default_member_permissions` (Manage Messages) AND checked on
the server, because a server owner can override the default in Server Settings > Integrations.
`forget-me` is a separate top-level command: Discord applies default_member_permissions to a whole command
tree, so a member-facing subcommand of `/caveat` would be hidden from members.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Literal, cast

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs import render
from bot.cogs.review import NO_PINGS
from bot.engine import Post
from bot.community import SettingError, set_channel_shadow, update_config
from bot.storage import CaseNotFound
from bot.storage.contract import Storage
from bot.storage.rows import CaseRow
from policies.loader import PolicyError

log = logging.getLogger("caveat.commands")
PAGE = 10
LINK_MINUTES = 15
MOD_PERMS = discord.Permissions(manage_messages=True)
mod_only = app_commands.checks.has_permissions(manage_messages=True)


def queue_page_embed(cases: list[CaseRow], total: int, page: int, sort: str, replayed: bool = False) -> discord.Embed:
    """One page of the open-case list (replayed history included only when asked, and marked)."""
    pages = max(1, -(-total // PAGE))
    lines = []
    for c in cases:
        who = f" · claimed by <@{c['claimed_by']}>" if c["status"] == "claimed" else ""
        jump = f" · [post]({c['url']})" if c.get("url") else ""
        mark = " · replayed" if c.get("kind") == "replay" else ""
        lines.append(f"**#{c['id']}** {c.get('label') or 'no label'} · {c['action']}{mark} · {c['created_at'][:16]}"
                     f"{who}{jump}")
    scope = " (replayed history included)" if replayed else ""
    embed = discord.Embed(title=f"Open cases ({total}) · {sort} first{scope}", description="\n".join(lines) or "No open cases.",
                          color=render.STATUS_COLOR["open"])
    embed.set_footer(text=f"page {page} of {pages}")
    return embed


class QueuePageButton(discord.ui.DynamicItem[discord.ui.Button],
                      template=r"caveat:queue:(?P<sort>oldest|severity):(?P<page>\d+):(?P<dir>prev|next)(?P<r>:r)?"):
    """Previous / next page of `/caveat queue`: custom id `caveat:queue:<sort>:<page>:<prev|next>[:r]`
    (`:r` keeps replayed history in the list)."""

    def __init__(self, sort: str, page: int, direction: str, disabled: bool = False, replayed: bool = False):
        super().__init__(discord.ui.Button(label="◀ Previous" if direction == "prev" else "Next ▶", disabled=disabled,
                                           custom_id=f"caveat:queue:{sort}:{page}:{direction}{':r' if replayed else ''}"))
        self.sort, self.page, self.direction, self.replayed = sort, page, direction, replayed

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        """Rebuild from the custom id."""
        return cls(match["sort"], int(match["page"]), match["dir"], replayed=bool(match["r"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        """Show the neighbouring page in place."""
        if not interaction.permissions.manage_messages:
            await interaction.response.send_message("Only moderators (Manage Messages) can see the queue.", ephemeral=True)
            return
        page = self.page + (1 if self.direction == "next" else -1)
        cog = cast("Commands", cast(commands.Bot, interaction.client).get_cog("Commands"))  # loaded at start
        embed, view = await cog.queue_page(str(interaction.guild_id), self.sort, page, replayed=self.replayed)
        await interaction.response.edit_message(embed=embed, view=view)


class Commands(commands.Cog):
    """The `/caveat` command group and `/caveat-forget-me`."""

    caveat = app_commands.Group(name="caveat", description="Caveat moderation tools", guild_only=True,
                                default_permissions=MOD_PERMS)
    policy_group = app_commands.Group(name="policy", description="Policy tools", parent=caveat)

    def __init__(self, bot):
        self.bot = bot
        self.store: Storage = bot.store

    async def cog_load(self) -> None:
        """Register the persistent page buttons."""
        self.bot.add_dynamic_items(QueuePageButton)

    async def cog_unload(self) -> None:
        """Unregister the page buttons."""
        self.bot.remove_dynamic_items(QueuePageButton)

    async def cog_app_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError):
        """Answer permission refusals in private instead of failing silently."""
        if isinstance(error, app_commands.MissingPermissions):
            await self.store.audit(str(interaction.user.id), "command_refused", community=str(interaction.guild_id or ""),
                                   detail={"command": interaction.command.qualified_name if interaction.command else None})
            await interaction.response.send_message(
                "This command is for moderators: it needs the Manage Messages permission.", ephemeral=True)

    async def queue_page(self, community: str, sort: str, page: int,
                         replayed: bool = False) -> tuple[discord.Embed, discord.ui.View]:
        """The embed and navigation buttons for one page of this server's open cases (replayed ones only if asked)."""
        total = await self.store.count_cases(community=community, include_replayed=replayed)
        pages = max(1, -(-total // PAGE))
        page = min(max(1, page), pages)
        cases = await self.store.cases(community=community, status="open", sort=sort, limit=PAGE,
                                       offset=(page - 1) * PAGE, include_replayed=replayed)
        view = discord.ui.View(timeout=None)
        view.add_item(QueuePageButton(sort, page, "prev", disabled=page <= 1, replayed=replayed))
        view.add_item(QueuePageButton(sort, page, "next", disabled=page >= pages, replayed=replayed))
        return queue_page_embed(cases, total, page, sort, replayed), view

    @caveat.command(name="queue", description="Open cases, oldest or most severe first")
    @mod_only
    async def queue(self, interaction: discord.Interaction, sort: Literal["severity", "oldest"] = "severity",
                    page: app_commands.Range[int, 1] = 1, include_replayed: bool = False):
        """List open cases, paginated; replayed history only with include_replayed."""
        embed, view = await self.queue_page(str(interaction.guild_id), sort, page, replayed=include_replayed)
        await interaction.response.send_message(embed=embed, view=view, ephemeral=True, allowed_mentions=NO_PINGS)

    @caveat.command(name="case", description="Show one case with its explanation")
    @mod_only
    async def case(self, interaction: discord.Interaction, case_id: int):
        """Show a case card privately."""
        try:
            case = await self.store.case(case_id, community=str(interaction.guild_id))
        except CaseNotFound:
            await interaction.response.send_message(f"No case #{case_id} in this server.", ephemeral=True)
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
            await self.store.audit(str(interaction.user.id), "policy_reload_refused", community=str(interaction.guild_id),
                                   detail={"issues": len(exc.issues), "kept": old})
            await interaction.response.send_message(
                f"Policy NOT reloaded; still using `{old}`. Problems:\n```\n{render.clip(issues, 1700)}\n```",
                ephemeral=True)
            return
        self.bot.apply_policy(new)
        # In force for every process on this database (other shards, the dashboard) too.
        await self.bot.policy_sync.publish(new, actor=str(interaction.user.id))
        await self.store.audit(str(interaction.user.id), "policy_reload", community=str(interaction.guild_id), detail={"from": old, "to": new.version})
        await interaction.response.send_message(
            f"Policy reloaded: `{old}` → `{new.version}` ({len(new.rules)} rules, {len(new.notes)} notes).", ephemeral=True)

    @caveat.command(name="mode", description="Shadow mode (record only) or live mode for a channel")
    @mod_only
    async def mode(self, interaction: discord.Interaction, mode: Literal["shadow", "live"],
                   channel: discord.TextChannel | discord.ForumChannel | discord.Thread | None = None):
        """Switch a channel (default: this one) between shadow and live."""
        channel_id = channel.id if channel else interaction.channel_id
        await set_channel_shadow(self.store, str(interaction.guild_id), str(channel_id), mode == "shadow",
                                 str(interaction.user.id))
        what = "records decisions only; no public notes" if mode == "shadow" else "posts notes publicly"
        scope = " (and every post in it)" if isinstance(channel, discord.ForumChannel) else ""
        await interaction.response.send_message(f"<#{channel_id}>{scope} is now in **{mode}** mode: Caveat {what}.",
                                                ephemeral=True)

    @caveat.command(name="stats", description="Cases by label and outcome, notes sent, judged note precision")
    @mod_only
    async def stats(self, interaction: discord.Interaction):
        """Show moderation statistics."""
        stats = await self.store.stats(community=str(interaction.guild_id))
        await interaction.response.send_message(embed=render.stats_embed(stats), ephemeral=True)

    @caveat.command(name="setup", description="This server's Caveat settings: moderators' channel, on-call role, mode...")
    @mod_only
    async def setup_command(self, interaction: discord.Interaction,
                            mod_channel: discord.TextChannel | None = None, oncall_role: discord.Role | None = None,
                            mode: Literal["shadow", "live"] | None = None,
                            locale: str | None = None, note_language: str | None = None,
                            realert_minutes: app_commands.Range[float, 0, 1440] | None = None):
        """Show the settings, or change the ones given; a wrong value changes nothing and says why."""
        community = str(interaction.guild_id)
        changes = {key: value for key, value in (
            ("mod_channel_id", mod_channel.id if mod_channel else None),
            ("oncall_role_id", oncall_role.id if oncall_role else None),
            ("shadow_mode", mode), ("locale", locale), ("note_language", note_language),
            ("realert_minutes", realert_minutes)) if value is not None}
        if changes:
            try:
                config = await update_config(self.store, self.bot.policy, community, str(interaction.user.id), changes)
            except SettingError as exc:
                await interaction.response.send_message(f"Nothing changed: {exc}.", ephemeral=True)
                return
            text = "Settings saved."
        else:
            config = await self.bot.community_config(community)
            text = "Current settings (give options to change them)."
        await interaction.response.send_message(text, embed=render.settings_embed(config), ephemeral=True,
                                                allowed_mentions=NO_PINGS)

    @caveat.command(name="dashboard", description="A one-time login link to the web dashboard, for you only")
    @mod_only
    async def dashboard(self, interaction: discord.Interaction):
        """Send this moderator a personal, one-time, short-lived login link for this server's dashboard."""
        if not self.bot.dashboard_url:
            await interaction.response.send_message(
                "The dashboard address is not configured: the operator sets CAVEAT_DASHBOARD_URL (docs/discord.md).",
                ephemeral=True)
            return
        community, user = str(interaction.guild_id), interaction.user
        token = await self.store.create_login_link(community, str(user.id), str(user), minutes=LINK_MINUTES)
        await self.store.audit(str(user.id), "login_link_created", community=community)
        await interaction.response.send_message(
            f"Your personal login link (works once, for {LINK_MINUTES} minutes; do not share it):\n"
            f"{self.bot.dashboard_url}/login/link/{token}", ephemeral=True)

    @caveat.command(name="logout-everywhere", description="End every dashboard session of a moderator now")
    @mod_only
    async def logout_everywhere(self, interaction: discord.Interaction, moderator: discord.Member | None = None):
        """Revoke a moderator's dashboard sessions and unused links (default: your own) in this server."""
        target = moderator or interaction.user
        community = str(interaction.guild_id)
        n = await self.store.revoke_moderator_sessions(community, str(target.id))
        await self.store.audit(str(interaction.user.id), "web_sessions_revoked", community=community,
                               detail={"moderator": str(target.id), "sessions": n})
        await interaction.response.send_message(f"Ended {n} dashboard session(s) of <@{target.id}>.", ephemeral=True,
                                                allowed_mentions=NO_PINGS)

    @caveat.command(name="clear-replayed", description="Close every open case that came from a replayed history")
    @mod_only
    async def clear_replayed(self, interaction: discord.Interaction):
        """Bulk-close replayed (shadow history) cases of this server."""
        n = await self.bot.cases.clear_replayed(str(interaction.guild_id), str(interaction.user.id))
        await interaction.response.send_message(f"Closed {n} replayed case(s).", ephemeral=True)

    @app_commands.command(name="caveat-forget-me", description="Remove the text of your posts from Caveat's records")
    @app_commands.guild_only()
    async def forget_me(self, interaction: discord.Interaction):
        """Any member: purge their stored post text everywhere; anonymized counts stay."""
        n = await self.store.forget_user(str(interaction.user.id), community=str(interaction.guild_id),
                                         actor=str(interaction.user.id))
        await interaction.response.send_message(
            f"Done: Caveat no longer stores the text of your {n} post(s) in this server. Anonymized counts are kept.",
            ephemeral=True)


async def setup(bot) -> None:
    """Extension entry point."""
    await bot.add_cog(Commands(bot))
