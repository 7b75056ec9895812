"""Fixtures: a fresh fake Discord and a fresh, real CaveatBot connected to it for every test."""
from __future__ import annotations

import asyncio
import logging
import socket

import discord
import pytest
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.client import CaveatBot
from bot.community import update_config
from bot.storage import Store
from policies.loader import PolicyHolder, load_policy
from fake_discord import FakeDiscord
from pgcluster import BACKENDS

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Refuse any connection that is not to this machine: the suite must never reach the real Discord."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            raise ConnectionRefusedError(f"e2e tests may only connect to loopback, not {address[0]}")
        return real_connect(self, address)
    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture
async def fake(monkeypatch):
    """The fake Discord, with discord.py's REST base and gateway pointed at it."""
    server = FakeDiscord()
    await server.start()
    monkeypatch.setattr(Route, "BASE", server.api_base)
    monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(server.gateway_url))
    yield server
    await server.close()
    assert not server.unhandled, f"the bot called routes the fake does not know: {server.unhandled}"


@pytest.fixture
def bot_policy_dir():
    """Policy directory for the bot (None: the shipped policies); a test module may override it."""
    return None


class Harness:
    """Starts, restarts and stops the bot against the fake, and waits for it to finish with a post."""

    def __init__(self, fake: FakeDiscord, db_path, policy, *, configure: bool = True,
                 dashboard_url: str | None = "http://127.0.0.1:8080", bot_class: type[CaveatBot] = CaveatBot,
                 **bot_options):
        self.fake, self.db_path, self.policy = fake, db_path, policy
        self.configure, self.dashboard_url = configure, dashboard_url
        self.bot_class, self.bot_options = bot_class, bot_options   # e.g. a sharded bot and its shard_ids
        self.bot: CaveatBot | None = None
        self.store: Store | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> CaveatBot:
        """Open the database and connect a new bot (what `caveat run` does, minus the token check)."""
        self.store = await Store.open(self.db_path)
        if self.configure:
            # Every server was set up with /caveat setup and went live (tests of setup itself start bare).
            for guild in self.fake.guilds:
                await update_config(self.store, self.policy, guild.id, "owner",
                                    {"mod_channel_id": guild.mods.id, "oncall_role_id": guild.oncall_role,
                                     "shadow_mode": "live"})
        self.bot = self.bot_class(store=self.store, policies=PolicyHolder(self.policy), scorer=None,
                                  guild_ready_timeout=0.05, dashboard_url=self.dashboard_url, outbox_seconds=0.2,
                                  realert_check_seconds=0.2, crisis_retry_delays=(0.1, 0.2), **self.bot_options)
        await self.bot.login("fake-token")
        self._task = asyncio.create_task(self.bot.connect(reconnect=False))
        await asyncio.wait_for(self.bot.wait_until_ready(), 5)
        return self.bot

    async def stop(self) -> None:
        """Disconnect the bot and close its database."""
        if self.bot is not None:
            await self.bot.close()
            try:
                await asyncio.wait_for(self._task, 5)
            except (asyncio.CancelledError, discord.ConnectionClosed):
                pass
            await self.store.close()
            self.bot = None

    async def restart(self) -> CaveatBot:
        """Stop and start again on the same database: nothing in memory survives."""
        await self.stop()
        return await self.start()

    async def post(self, content: str, **kwargs) -> tuple[dict, object]:
        """A member posts; returns (message payload, Outcome) once the bot has fully handled it."""
        message_id = kwargs.pop("message_id", None) or self.fake.snowflake()
        waiter = self.bot.wait_for("caveat_post_handled", check=lambda mid, _: mid == int(message_id), timeout=5)
        msg = await self.fake.send_message(content, message_id=message_id, **kwargs)
        _, outcome = await waiter
        return msg, outcome

    async def edit(self, message: dict, content: str) -> tuple[dict, object]:
        """A member edits a post; returns (payload, Outcome) once handled."""
        waiter = self.bot.wait_for("caveat_post_handled", check=lambda mid, _: mid == int(message["id"]), timeout=5)
        msg = await self.fake.edit_message(message, content)
        _, outcome = await waiter
        return msg, outcome

    async def delete(self, message: dict) -> None:
        """A member deletes a post; returns once handled."""
        waiter = self.bot.wait_for("caveat_post_handled", check=lambda mid, _: mid == int(message["id"]), timeout=5)
        await self.fake.delete_message(message)
        await waiter


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Every Discord end-to-end test runs against SQLite and against PostgreSQL."""
    return request.param


@pytest.fixture
async def make_harness(fake, new_database):
    """Start extra bots on their own database (a bare server, another policy); all are stopped at the end."""
    started = []

    async def make(policy, *, name="other.db", database=None, **options) -> Harness:
        """`database`: share one (another process of the same deployment); default: a new one named `name`."""
        h = Harness(fake, database or new_database(name), policy, **options)
        await h.start()
        started.append(h)
        return h
    yield make
    for h in started:
        await h.stop()


@pytest.fixture
async def harness(fake, database, bot_policy_dir, policy, caplog):
    """A connected bot with its own temporary database; the test fails if the bot logged an error."""
    # The shipped PolicySet is immutable, so one session-wide copy saves a YAML parse per test.
    h = Harness(fake, database, policy if bot_policy_dir is None else load_policy(bot_policy_dir))
    await h.start()
    yield h
    await h.stop()
    # caplog.records holds only the current phase (teardown); the bot's errors happened during setup or the call.
    records = caplog.get_records("setup") + caplog.get_records("call") + caplog.records
    errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    assert not errors, f"the bot logged errors: {errors}"
