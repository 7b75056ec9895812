"""`caveat run` as a real subprocess against the fake Discord: start, wait for its shards, stop, kill -9."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from bot.community import update_config
from bot.storage import Store

from fake_discord import FakeDiscord, Session

HERE = Path(__file__).resolve().parent
LAUNCHER = HERE / "caveat_on_fake.py"
REPO = HERE.parents[1]


class BotProcess:
    """One `caveat run` process; its REST calls carry `Bot <token>`, so the fake tells processes apart by token."""

    def __init__(self, fake: FakeDiscord, name: str, database, run_args: list[str], log_dir: Path,
                 policy_dir: Path | None = None):
        self.fake, self.name, self.database, self.run_args = fake, name, database, run_args
        self.token = f"fake-token-{name}"
        self.log_path = log_dir / f"{name}.log"
        self.policy_dir = policy_dir
        self.proc: asyncio.subprocess.Process | None = None
        self.sessions: list[Session] = []

    async def start(self, shards: list[tuple[int, int] | None], *, timeout: float = 30) -> list[Session]:
        """Start the process; returns once the fake has sent READY and GUILD_CREATEs on each of `shards`."""
        env = {**os.environ, "FAKE_DISCORD_PORT": str(self.fake.port), "DISCORD_TOKEN": self.token,
               "PYTHONUNBUFFERED": "1"}
        env.pop("CAVEAT_DB", None)
        top = ["--policy", str(self.policy_dir)] if self.policy_dir else []
        with open(self.log_path, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, str(LAUNCHER), *top, "run", "--rules-only", "--db", str(self.database),
                *self.run_args, cwd=REPO, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log)
        ready = asyncio.ensure_future(self.fake.wait_for_sessions(shards, token=self.token, timeout=timeout))
        exited = asyncio.ensure_future(self.proc.wait())
        await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before its shards were ready:\n"
                               f"{self.log()[-3000:]}")
        exited.cancel()
        self.sessions = ready.result()
        return self.sessions

    def kill(self) -> None:
        """kill -9: no clean close, nothing flushed; its gateway sessions stay resumable on the fake's side."""
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self, timeout: float = 20) -> int:
        """Ctrl-C (what `docker stop` sends to the image): the bot closes its sessions and its database."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        """What the process wrote to stdout and stderr."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def errors(self) -> list[str]:
        """Lines of its log that report an error or a traceback."""
        return [line for line in self.log().splitlines() if line.startswith(("ERROR", "CRITICAL", "Traceback"))]


async def go_live(database, policy, guilds) -> None:
    """What each server's owner did once with /caveat setup: a moderators' channel, an on-call role, live mode."""
    store = await Store.open(database)
    try:
        for guild in guilds:
            await update_config(store, policy, guild.id, "owner", {
                "mod_channel_id": guild.mods.id, "oncall_role_id": guild.oncall_role, "shadow_mode": "live"})
    finally:
        await store.close()
