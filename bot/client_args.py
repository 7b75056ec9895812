"""Arguments of `caveat run` (kept apart from bot.client so building the CLI never imports discord.py)."""
from __future__ import annotations

import re

_SHARD_ITEM = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")


def add_arguments(p) -> None:
    """Add the options of `caveat run` to its subparser."""
    p.add_argument("--db", help="database file (default: $CAVEAT_DB or the user data directory)")
    p.add_argument("--model", help="trained model directory (default: $CAVEAT_MODEL_DIR or the shipped model)")
    p.add_argument("--rules-only", action="store_true", help="score with keyword rules only (skip the model)")
    from bot.score_workers import add_argument as add_score_workers
    add_score_workers(p)  # --score-workers N
    p.add_argument("--no-sync", action="store_true",
                   help="do not publish slash commands to Discord at start (they were synced before)")
    p.add_argument("--metrics-port", type=int, help="serve /healthz and /metrics on this port (default: off)")
    p.add_argument("--metrics-host", default="127.0.0.1", help="address for --metrics-port (default 127.0.0.1)")
    p.add_argument("--takeover-after", type=float, default=60.0, metavar="SECONDS",
                   help="when another Caveat process on this database has not been heard from for this long, post"
                        " the replies and cards it reserved but never posted (default 60)")
    p.add_argument("--shards", metavar="IDS",
                   help="gateway shards this process runs: one id (2), a range (0-3) or a comma list (0,2,5);"
                        " needs --shard-count. Discord sends a server's events to shard (server id >> 22) %% count")
    p.add_argument("--shard-count", type=int, metavar="N",
                   help="total number of shards across all processes; alone, this process runs all N")


def parse_shards(shards: str | None, shard_count: int | None) -> tuple[list[int] | None, int | None]:
    """The shard ids this process runs and the total count, from `--shards` and `--shard-count`.

    (None, None) without either option: one unsharded connection, as before sharding existed. ValueError, naming the
    option, for anything Discord would refuse (an id outside 0..count-1, a count below 1) or that does not parse.
    """
    if shards is None and shard_count is None:
        return None, None
    if shard_count is None:
        raise ValueError(f"--shards {shards} needs --shard-count (the total number of shards across all processes)")
    if shard_count < 1:
        raise ValueError(f"--shard-count must be at least 1, not {shard_count}")
    if shards is None:
        return list(range(shard_count)), shard_count
    ids: set[int] = set()
    for item in shards.split(","):
        m = _SHARD_ITEM.fullmatch(item)
        if m is None:
            raise ValueError(f"--shards {shards!r}: expected shard ids like 2, 0-3 or 0,2,5")
        first, last = int(m[1]), int(m[2] if m[2] is not None else m[1])
        if last < first:
            raise ValueError(f"--shards {shards!r}: the range {first}-{last} runs backwards")
        if last >= shard_count:
            raise ValueError(f"--shards {shards}: shard id {last} is outside 0..{shard_count - 1}"
                             f" (--shard-count {shard_count})")
        ids.update(range(first, last + 1))
    return sorted(ids), shard_count
