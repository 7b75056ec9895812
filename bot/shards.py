"""`caveat run --shards 0-3 --shard-count 8`: a CaveatBot on some of the bot's gateway shards.

Discord sends every event of a server to one shard, `(guild id >> 22) % shard_count`; each process runs the shards
it is given and so sees only those servers. Nothing is kept in process memory that another process needs: every
decision, reply reservation and cooldown goes through the one database (see Pipeline), so any number of processes
may share it, and two that briefly hold the same shard (a rolling restart) still send one note per post.
"""
from __future__ import annotations

import logging

from discord.ext import commands

from bot.client import CaveatBot
from bot.client_args import parse_shards

log = logging.getLogger("caveat.discord")


class ShardedCaveatBot(CaveatBot, commands.AutoShardedBot):
    """CaveatBot over discord.py's AutoShardedBot: `shard_ids` (this process's shards) out of `shard_count`."""

    async def on_shard_ready(self, shard_id: int) -> None:
        """Say which shard came up and how many servers it carries (ids only)."""
        guilds = sum(1 for g in self.guilds if g.shard_id == shard_id)
        log.info("shard %d of %s ready with %d server(s)", shard_id, self.shard_count, guilds)


def make_bot(args, **services) -> CaveatBot:
    """The bot `caveat run` starts: a CaveatBot, or a ShardedCaveatBot with `--shards`/`--shard-count`."""
    shard_ids, shard_count = parse_shards(getattr(args, "shards", None), getattr(args, "shard_count", None))
    if shard_ids is None:
        return CaveatBot(**services)
    return ShardedCaveatBot(shard_ids=shard_ids, shard_count=shard_count, **services)
