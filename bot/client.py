"""`caveat run`: the discord.py `Bot` subclass with Caveat's services injected, and its entry point."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import sys

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot.cases import CaseService
from bot.community import CommunityConfig
from bot.pipeline import Pipeline
from bot.policy_sync import PolicySync
from bot.storage import Store, default_db_path
from bot.storage.contract import Storage
from policies.loader import PolicyError, PolicyHolder, load_policy, warn_once
from policies.settings import load_settings, retired_variables

log = logging.getLogger("caveat.discord")

EXIT_USAGE = 2
# Loaded by name in setup_hook; a failing extension stops the start instead of being skipped silently.
EXTENSIONS = ("bot.cogs.listeners", "bot.cogs.review", "bot.cogs.outbox", "bot.cogs.commands")


def caveat_intents() -> discord.Intents:
    """Exactly the intents Caveat needs: guilds, guild messages and message content (privileged)."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.message_content = True
    return intents


def required_permissions() -> discord.Permissions:
    """What the bot needs in the channels it watches (docs/discord.md explains each one)."""
    return discord.Permissions(view_channel=True, send_messages=True, send_messages_in_threads=True,
                               embed_links=True, read_message_history=True, manage_messages=True)


def invite_url(application_id: int) -> str:
    """The OAuth2 URL a server owner opens to add the bot with exactly the permissions it needs."""
    return discord.utils.oauth_url(application_id, permissions=required_permissions(),
                                   scopes=("bot", "applications.commands"))


class CaveatBot(commands.Bot):
    """The Discord side of Caveat: receives storage, policies and the scorer; cogs do the work."""

    def __init__(self, *, store: Storage, policies: PolicyHolder, scorer=None, sync_commands: bool = True,
                 dashboard_url: str | None = None, outbox_seconds: float = 2.0, realert_check_seconds: float = 30.0,
                 crisis_retry_delays: tuple[float, ...] = (5.0, 30.0, 120.0), score_workers=None,
                 policy_poll_seconds: float = 2.0, heartbeat_seconds: float = 10.0,
                 takeover_after_seconds: float = 60.0, **options):
        super().__init__(command_prefix=commands.when_mentioned, intents=caveat_intents(), help_command=None,
                         allowed_mentions=discord.AllowedMentions.none(), **options)
        self.store = store
        self.policies = policies
        self.scorer = scorer
        self.pipeline = Pipeline(store, policies.current, scorer, workers=score_workers)  # --score-workers N
        self.cases = CaseService(store, lambda: self.policies.current)
        self.dashboard_url = (dashboard_url or "").rstrip("/") or None
        self.outbox_seconds = outbox_seconds
        self.realert_check_seconds = realert_check_seconds
        self.crisis_retry_delays = crisis_retry_delays  # background retries of a failed crisis reply
        self.sync_commands = sync_commands
        self.tree.error(self._on_app_command_error)
        # One policy for every process on this database (bot/policy_sync.py): published and followed via storage.
        self.policy_sync = PolicySync(store, lambda: self.policies.current, self.apply_policy,
                                      poll_seconds=policy_poll_seconds)
        self._policy_task: asyncio.Task | None = None
        # This process's name in storage: it marks the posts it acts on and heartbeats; when it dies, another
        # process serving the same servers posts what it reserved but never posted (cogs/outbox.py `takeover`).
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.pipeline.instance = self.instance
        # A live process heartbeats well within the silence after which others take its work over.
        self.heartbeat_seconds = min(heartbeat_seconds, takeover_after_seconds / 4)
        self._in_flight: set[asyncio.Task] = set()
        #: How long a stopping bot waits for posts it is handling before it closes (then storage closes).
        self.drain_seconds = 15.0
        self.takeover_after_seconds = takeover_after_seconds

    @contextlib.contextmanager
    def handling(self):
        """Mark the current task as handling a member's post: `close()` lets it finish first."""
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            yield
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _drain(self) -> None:
        pending = {t for t in self._in_flight if t is not asyncio.current_task() and not t.done()}
        if pending:
            log.info("waiting for %d post(s) being handled before stopping", len(pending))
            _, left = await asyncio.wait(pending, timeout=self.drain_seconds)
            if left:
                log.warning("stopping with %d post(s) still being handled; another process takes over what they"
                            " reserved", len(left))

    def apply_policy(self, policy) -> None:
        """Put a PolicySet in force in this process (the pipeline and score workers included)."""
        self.policies.current = policy
        self.pipeline.set_policy(policy)

    @property
    def policy(self):
        """The PolicySet in force."""
        return self.policies.current

    async def setup_hook(self) -> None:
        """Agree on the policy with the other processes on the database, load the extensions, publish the commands."""
        await self.store.heartbeat(self.instance)
        log.info("%s", await self.policy_sync.start())
        self._policy_task = asyncio.create_task(self.policy_sync.run(), name="caveat-policy-sync")
        for name in EXTENSIONS:
            await self.load_extension(name)
        if self.sync_commands:
            synced = await self.tree.sync()
            log.info("synced %d application commands", len(synced))

    async def close(self) -> None:
        """Let the posts being handled finish, stop following policy changes, then disconnect."""
        await self._drain()
        if self._policy_task is not None:
            self._policy_task.cancel()
            try:
                await self._policy_task
            except (asyncio.CancelledError, Exception):
                pass
            self._policy_task = None
        await super().close()
        try:  # a clean stop: others may take over this process's unfinished posts at once
            await self.store.retire_instance(self.instance)
        except Exception as exc:
            log.warning("could not retire this process from storage: %s", type(exc).__name__)

    async def on_ready(self) -> None:
        """Say where the bot is and how to invite it (ids only)."""
        log.info("connected as %s to %d server(s); invite URL: %s", self.user and self.user.id, len(self.guilds),
                 invite_url(self.application_id) if self.application_id else "(no application id yet)")

    async def on_message(self, message: discord.Message) -> None:
        """Caveat has no prefix commands: members' posts are handled by the listeners cog only."""

    async def community_config(self, guild_id) -> CommunityConfig:
        """This server's settings (moderators' channel, on-call role, locale, shadow mode...)."""
        return await self.pipeline.config(str(guild_id))

    async def mod_channel(self, guild_id) -> discord.abc.Messageable | None:
        """This server's moderators' channel, or None until `/caveat setup` sets one.

        A channel id that does not belong to this server is never used: cards of one server cannot leak
        into another's channel."""
        config = await self.community_config(guild_id)
        if config.mod_channel_id is None:
            return None
        channel = self.get_channel(int(config.mod_channel_id))
        if not isinstance(channel, discord.abc.Messageable):  # unknown, or a category or forum: no messages there
            return None
        if getattr(getattr(channel, "guild", None), "id", None) != int(guild_id):
            return None
        return channel

    async def _on_app_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError):
        # Permission refusals are answered by the cog's error handler; anything else is a bug worth a log line.
        if isinstance(error, app_commands.CheckFailure):
            return
        log.error("slash command %s failed", interaction.command and interaction.command.qualified_name,
                  exc_info=error)
        message = "Something went wrong; the error was logged for the bot's operator."
        if interaction.response.is_done():
            await interaction.followup.send(message, ephemeral=True)
        else:
            await interaction.response.send_message(message, ephemeral=True)


def _load_scorer(args):
    """The model runner, or None (rules only) with a warning when --rules-only or the model is unavailable."""
    if getattr(args, "rules_only", False):
        return None
    from classifiers.serving import ModelUnavailable, load_default_classifier
    try:
        return load_default_classifier(getattr(args, "model", None))
    except ModelUnavailable as exc:
        print(f"caveat: warning: model unavailable ({exc}); running with keyword rules only", file=sys.stderr)
        return None


async def _serve(token: str, args, holder: PolicyHolder, scorer) -> int:
    store = await Store.open(getattr(args, "db", None) or default_db_path())
    ops = workers = None
    try:
        from bot.score_workers import start_from_args
        workers = await start_from_args(args, scorer)  # --score-workers N: None for 0 (score in this process)
        if getattr(args, "metrics_port", None):
            from bot.metrics import start_ops_server
            ops = await start_ops_server(store, args.metrics_host, args.metrics_port, scorer=scorer)
        from bot.shards import make_bot  # imports this module: CaveatBot, or its sharded form with --shards
        bot = make_bot(args, store=store, policies=holder, scorer=scorer, score_workers=workers,
                       sync_commands=not getattr(args, "no_sync", False),
                       dashboard_url=load_settings().dashboard_url,
                       takeover_after_seconds=getattr(args, "takeover_after", None) or 60.0)
        async with bot:
            await bot.start(token)
    except discord.LoginFailure:
        print("caveat: Discord rejected DISCORD_TOKEN (reset the token in the developer portal)", file=sys.stderr)
        return EXIT_USAGE
    except (aiohttp.ClientError, OSError) as exc:
        print(f"caveat: cannot reach Discord ({type(exc).__name__}: {exc}); check the network and try again",
              file=sys.stderr)
        return 1
    except discord.PrivilegedIntentsRequired:
        print("caveat: enable the MESSAGE CONTENT intent for this application in the Discord developer portal"
              " (Bot > Privileged Gateway Intents)", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if ops is not None:
            await ops.cleanup()
        await store.close()
        if workers is not None:
            await workers.aclose()
        if scorer is not None:
            await scorer.close()
    return 0


def main(args) -> int:
    """Run the Discord bot until interrupted; exit 2 with a clear message on configuration errors."""
    from bot.client_args import parse_shards
    try:
        parse_shards(getattr(args, "shards", None), getattr(args, "shard_count", None))
    except ValueError as exc:
        print(f"caveat: {exc}", file=sys.stderr)
        return EXIT_USAGE
    secret = load_settings().discord_token
    token = secret.get_secret_value() if secret is not None else ""
    if not token:
        print("caveat: DISCORD_TOKEN is not set; create a bot token in the Discord developer portal and export"
              " DISCORD_TOKEN=... (see docs/discord.md)", file=sys.stderr)
        return EXIT_USAGE
    for name in retired_variables():
        print(f"caveat: warning: {name} is no longer read; each server sets its moderators' channel and on-call"
              " role with /caveat setup (docs/discord.md)", file=sys.stderr)
    try:
        holder = PolicyHolder(load_policy(getattr(args, "policy", None)))
    except PolicyError as exc:
        print("caveat: invalid policy:", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return EXIT_USAGE
    warn_once(holder.current)
    scorer = _load_scorer(args)
    try:
        return asyncio.run(_serve(token, args, holder, scorer))
    except KeyboardInterrupt:
        return 130
