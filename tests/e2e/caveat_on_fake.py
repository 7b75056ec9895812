"""`caveat ARGS...` in a subprocess, with discord.py pointed at the fake Discord on 127.0.0.1:$FAKE_DISCORD_PORT.

The multi-process tests start the bot with this instead of the `caveat` script: it changes nothing but the two
addresses the e2e fixture patches in-process (Route.BASE and the default gateway), refuses any connection that is
not to this machine, then runs `bot.cli.main` unchanged.
"""
from __future__ import annotations

import os
import socket
import sys

import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def _loopback_only() -> None:
    real_connect = socket.socket.connect

    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            raise ConnectionRefusedError(f"a bot under test may only connect to loopback, not {address[0]}")
        return real_connect(self, address)
    socket.socket.connect = guarded


if __name__ == "__main__":
    port = int(os.environ["FAKE_DISCORD_PORT"])
    _loopback_only()
    Route.BASE = f"http://127.0.0.1:{port}/api/v10"
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"ws://127.0.0.1:{port}/gateway")
    from bot.cli import main
    sys.exit(main(sys.argv[1:]))
