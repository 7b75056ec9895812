"""Storage under another writer (issue 21): posts while another process holds the database's write lock, and
the bot next to a `caveat purge` and a `caveat replay` of the same file.

    python benchmarks/storage_faults.py [--posts 40] [--hold 6] [--purge-posts 20000] [--replay-posts 4096]

1. Lock holder: another OS process holds BEGIN IMMEDIATE for --hold seconds (past SQLite's 5 s busy timeout);
   meanwhile --posts posts arrive evenly, alternating the bot (Discord pipeline) and the dashboard (sandbox, its
   own connection), every fifth a crisis post; then 4 crisis posts on the bot and one sandbox post after the lock.
   Prints posts stored / lost / crisis replies, and whether the store still works.
2. Purge: --purge-posts old posts are stored, then `caveat purge` runs in another process while the bot stores
   a post every 100 ms. Prints the purge's duration, the bot's write latency (p50, max), posts lost, and how
   many purged posts' text is still in caveat.db, -wal or -shm afterwards.
3. Replay: `caveat replay --rules-only` of --replay-posts posts in another process while the bot stores a post
   every 100 ms; prints the bot's write latency (replay writes 512 posts per transaction).

Default settings throughout (5 s busy timeout, `Store.busy_budget_s`), rules only, no model. Writes only
under a temporary directory; prints counts and timings, never post text.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

from bot.engine import Post  # noqa: E402
from bot.pipeline import Pipeline  # noqa: E402
from bot.storage import Store  # noqa: E402
from bot.web.sandbox import post_to_sandbox  # noqa: E402
from policies.loader import load_policy  # noqa: E402

CRISIS = "I want to kill myself tonight"
CHAT = ["anyone tried magnesium for cramps?", "thanks all, that helped", "good morning everyone",
        "the clinic finally called back", "what time is the group call?"]
HOLDER = r"""
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""
CLI = "import sys; from bot.cli import main; sys.exit(main(sys.argv[1:]))"


def cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"p50 {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"


async def lock_holder(db: Path, n: int, hold: float) -> dict:
    policy = load_policy()
    bot, dash = await Store.open(db), await Store.open(db)
    pipe, web = Pipeline(bot, policy), Pipeline(dash, policy)
    await pipe.handle(Post("discord", "warm", "c1", "u0", "hello", community_id="g1"))
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(hold)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    t0 = time.monotonic()
    result = {"offered": 0, "stored": 0, "lost": 0, "crisis": 0, "crisis_replies": 0, "errors": {}}
    latencies: list[float] = []

    async def one(i: int, *, after: bool = False) -> None:
        crisis = after or i % 5 == 0
        text = CRISIS if crisis else CHAT[i % len(CHAT)]
        sandbox = not after and i % 2 == 1
        key = "after" if after else "during"
        result.setdefault(key, {"offered": 0, "stored": 0, "crisis": 0, "crisis_replies": 0})
        result[key]["offered"] += 1
        result[key]["crisis"] += crisis
        started = time.monotonic()
        try:
            if sandbox:
                outcome = await post_to_sandbox(web, f"member{i}", text)
            else:
                outcome = await pipe.handle(Post("discord", f"{key}{i}", "c1", f"u{i}", text, community_id="g1"))
        except Exception as exc:  # a lost post: count it, never print its text
            result["errors"][type(exc).__name__] = result["errors"].get(type(exc).__name__, 0) + 1
            return
        latencies.append(time.monotonic() - started)
        if outcome.decision is not None:
            result[key]["stored"] += 1
        result[key]["crisis_replies"] += outcome.reply == "resources"

    during = []
    for i in range(n):
        await asyncio.sleep(max(0.0, t0 + hold * i / n - time.monotonic()))
        during.append(asyncio.create_task(one(i)))
    await asyncio.gather(*during)
    proc.wait()
    released = time.monotonic() - t0
    for i in range(4):
        await one(100 + 2 * i, after=True)
    try:
        await post_to_sandbox(web, "eve", "still here after the lock")
        result["sandbox_after"] = "ok"
    except Exception as exc:
        result["sandbox_after"] = type(exc).__name__
    result["lock_held_s"] = round(released, 2)
    result["latency"] = ms(latencies)
    result["left_in_transaction"] = bot.conn.in_transaction or dash.conn.in_transaction
    for key in ("during", "after"):
        part = result[key]
        part["lost"] = part["offered"] - part["stored"]
    result["modes"] = {f.name: oct(f.stat().st_mode & 0o777) for f in sorted(db.parent.glob(db.name + "*"))}
    await bot.close()
    await dash.close()
    return result


async def seed_old_posts(db: Path, n: int) -> float:
    """n posts 100 days old, through the pipeline in batches (decisions and cases as in production)."""
    store = await Store.open(db)
    pipe = Pipeline(store, load_policy())
    old = datetime.now(timezone.utc) - timedelta(days=100)
    started = time.monotonic()
    for start in range(0, n, 1000):
        async with store.batch():
            for i in range(start, min(n, start + 1000)):
                text = f"oldpost{i:06d}x " + ("put the rapa cream on the wound" if i % 3 == 0 else CHAT[i % len(CHAT)])
                await pipe.handle(Post("discord", f"old{i}", "c1", f"u{i % 50}", text, community_id="g1",
                                       created_at=old), now=old)
    await store.close()
    return time.monotonic() - started


async def bot_beside(db: Path, argv: list[str], label: str, check=None) -> dict:
    """The bot stores a post every 100 ms while `caveat <argv>` runs in another process; `check()` runs after it
    with the bot's connection still open (closing the last connection checkpoints and removes the WAL)."""
    store = await Store.open(db)
    pipe = Pipeline(store, load_policy())
    proc = subprocess.Popen([sys.executable, "-c", CLI, *argv], env=ENV, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    tasks = []

    async def one(i: int) -> None:
        t = time.monotonic()
        try:
            await pipe.handle(Post("discord", f"{label}-bot{i}", "c2", f"b{i}", CRISIS if i % 10 == 0 else CHAT[i % 5],
                                   community_id="g1"))
            latencies.append(time.monotonic() - t)
        except Exception as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

    i = 0
    while proc.poll() is None:
        tasks.append(asyncio.create_task(one(i)))
        i += 1
        await asyncio.sleep(0.1)
    duration = time.monotonic() - started
    await asyncio.gather(*tasks)
    stderr = proc.stderr.read()
    checked = check() if check else None
    await store.close()
    return {"checked": checked, "rc": proc.returncode, "duration_s": round(duration, 2), "bot_posts": i, "bot_lost": sum(errors.values()),
            "errors": errors, "bot_latency": ms(latencies), "stderr_tail": stderr.strip().splitlines()[-1:]}


def text_left(db: Path, prefix: bytes) -> dict:
    """How many distinct seeded posts (by their marker) each file still holds."""
    pattern = re.compile(re.escape(prefix) + rb"\d{6}x")
    return {f.name: len(set(pattern.findall(f.read_bytes()))) for f in sorted(db.parent.glob(db.name + "*"))}


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--posts", type=int, default=40)
    ap.add_argument("--hold", type=float, default=6.0)
    ap.add_argument("--purge-posts", type=int, default=20000)
    ap.add_argument("--replay-posts", type=int, default=4096)
    args = ap.parse_args()
    print(f"CPU: {cpu()}; Python {platform.python_version()}; source {REPO}")
    with tempfile.TemporaryDirectory(prefix="caveat-faults-") as tmp:
        tmp = Path(tmp)
        r = await lock_holder(tmp / "lock.db", args.posts, args.hold)
        d, a = r["during"], r["after"]
        print(f"\n1. another process held the write lock {r['lock_held_s']} s; {d['offered']} posts during it "
              f"(bot and dashboard), 4 crisis posts + 1 sandbox post after it")
        print(f"   during: stored {d['stored']}/{d['offered']}, lost {d['lost']}, crisis replies "
              f"{d['crisis_replies']}/{d['crisis']}; errors {r['errors'] or 'none'}; latency {r['latency']}")
        print(f"   after:  stored {a['stored']}/{a['offered']}, crisis replies {a['crisis_replies']}/{a['crisis']},"
              f" sandbox {r['sandbox_after']}; connection left in a transaction: {r['left_in_transaction']}")
        print(f"   file modes while open: {r['modes']}")

        db = tmp / "purge.db"
        seeded = await seed_old_posts(db, args.purge_posts)
        before = text_left(db, b"oldpost")
        p = await bot_beside(db, ["purge", "--db", str(db), "--days", "90"], "purge",
                             check=lambda: text_left(db, b"oldpost"))
        left = p["checked"]
        print(f"\n2. `caveat purge` of {args.purge_posts} posts (seeded in {seeded:.1f} s) beside the bot: purge "
              f"{p['duration_s']} s (rc {p['rc']}); bot stored a post every 100 ms: {p['bot_posts']} posts, lost "
              f"{p['bot_lost']} {p['errors'] or ''}, latency {p['bot_latency']}")
        print(f"   posts whose text is on disk (distinct markers per file): before the purge {before}; after it,"
              f" the bot still connected: {left}")

        export = tmp / "history.jsonl"
        with export.open("w", encoding="utf-8") as fh:
            for i in range(args.replay_posts):
                fh.write(json.dumps({"id": f"h{i}", "text": CHAT[i % 5], "author": f"a{i % 40}"}) + "\n")
        rp = await bot_beside(db, ["replay", str(export), "--db", str(db), "--rules-only", "--no-progress"], "replay")
        print(f"\n3. `caveat replay --rules-only` of {args.replay_posts} posts beside the bot: replay {rp['duration_s']} s"
              f" (rc {rp['rc']}); bot: {rp['bot_posts']} posts, lost {rp['bot_lost']} {rp['errors'] or ''}, "
              f"latency {rp['bot_latency']}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
