"""Several Caveat processes on one database (issue 20): posts per second and latency for 1, 2 and 4 processes,
on SQLite and on PostgreSQL.

    python benchmarks/multiprocess.py [--backends sqlite postgresql] [--processes 1 2 4] [--posts 600]
                                      [--concurrency 8] [--pg-url postgresql://...]

Each process is what one bot shard does with a post once Discord delivered it: `Pipeline.handle` (keyword rules,
no model, so the database is what is measured), i.e. one transaction storing the post, its decision, audit
event, case, reply reservation and cooldown. The --posts posts (in-house text: ordinary, risky, crisis; 12
servers, 40 members) are split between the processes, each handling `--concurrency` posts at a time, as the
gateway hands them over. Latency is per post, from the start of `handle` to its return. Afterwards the run checks
that every post was decided exactly once and that no member got two notes on one topic.

PostgreSQL: a throwaway cluster (tests/pgcluster.py, Debian's postgresql) unless --pg-url is given; each run
uses a fresh schema. Prints one line per (backend, processes) and never post text.
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

TEXTS = [
    "Has anyone compared morning and evening dosing of their usual vitamin D?",
    "Put the rapa cream right on the fresh surgical wound, it stops the scar",
    "My dermatologist suggested a patch test first, which seems sensible.",
    "DM me, I sell sirolimus, cheaper than any pharmacy",
    "These exosomes regrow hair 100%, no need for a doctor",
    "I want to kill myself tonight",
    "Week three of the routine and my skin is calmer, thanks for the tips.",
    "Stopped my prescribed meds last week because the forum said so",
]
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def make_posts(n: int) -> list[tuple]:
    return [(f"m{i}", f"g{i % 12}", f"c{i % 3}", f"u{i % 40}", TEXTS[i % len(TEXTS)]) for i in range(n)]


async def _worker(target, posts, concurrency: int, global_lock: bool) -> list[float]:
    from bot.engine import Post
    from bot.storage.postgres import PostgresStore
    PostgresStore.community_locks = not global_lock
    from bot.pipeline import Pipeline
    from bot.storage import Store
    from policies.loader import load_policy

    store = await Store.open(target)
    pipe = Pipeline(store, load_policy())
    queue: asyncio.Queue = asyncio.Queue()
    for p in posts:
        queue.put_nowait(p)
    latencies: list[float] = []

    async def run():
        while not queue.empty():
            mid, guild, channel, author, text = queue.get_nowait()
            t = time.perf_counter()
            await pipe.handle(Post("discord", mid, channel, author, text, community_id=guild, author_name="m",
                                   created_at=T0), now=T0)
            latencies.append(time.perf_counter() - t)
    try:
        await asyncio.gather(*(run() for _ in range(concurrency)))
    finally:
        await store.close()
    return latencies


def worker(target, posts, concurrency, start_at, out, global_lock=False):
    while time.time() < start_at:
        time.sleep(0.005)
    began = time.time()
    lat = asyncio.run(_worker(target, posts, concurrency, global_lock))
    out.put((began, time.time(), lat))


async def prepare(target, guilds: int) -> None:
    from bot.community import update_config
    from bot.storage import Store
    from policies.loader import load_policy
    store = await Store.open(target)
    policy = load_policy()
    for g in range(guilds):
        await update_config(store, policy, f"g{g}", "owner", {"shadow_mode": "live"})
    await store.close()


async def verify(target, n: int) -> str:
    from bot.storage import Store
    store = await Store.open(target)
    try:
        decided = (await store._one("SELECT COUNT(DISTINCT post_id) AS p, COUNT(*) AS d FROM decisions"))
        dup_notes = await store._all("SELECT community_id, author_id, topic, COUNT(*) AS n FROM cooldowns"
                                     " GROUP BY community_id, author_id, topic HAVING COUNT(*) > 1")
    finally:
        await store.close()
    ok = decided["p"] == n and decided["d"] == n and not dup_notes
    return (f"{decided['d']} decisions for {decided['p']}/{n} posts, {len(dup_notes)} repeated notes"
            + ("" if ok else "  <-- WRONG"))


def run_once(target, n_proc: int, posts: list, concurrency: int,
             global_lock: bool = False) -> tuple[float, float, float, str]:
    asyncio.run(prepare(target, 12))
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 3.0  # every process imported and ready before the clock starts
    procs = [ctx.Process(target=worker, args=(target, posts[i::n_proc], concurrency, start_at, out, global_lock))
             for i in range(n_proc)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    began, ended = min(r[0] for r in results), max(r[1] for r in results)
    lat = sorted(x for r in results for x in r[2])
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return len(posts) / (ended - began), p50, p99, asyncio.run(verify(target, len(posts)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    ap.add_argument("--processes", nargs="+", type=int, default=[1, 2, 4])
    ap.add_argument("--posts", type=int, default=600)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--pg-url", help="an existing PostgreSQL server (default: a throwaway cluster)")
    ap.add_argument("--compare-global-lock", action="store_true",
                    help="on PostgreSQL, also run with one exclusive write lock for every transaction (as before"
                         " per-community locks)")
    args = ap.parse_args()
    os.environ.setdefault("CAVEAT_CACHE_DIR", tempfile.mkdtemp(prefix="caveat-bench-cache-"))
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"CPU: {cpu}; {os.cpu_count()} cores; {args.posts} posts, {args.concurrency} at a time per process,"
          " rules only")
    posts = make_posts(args.posts)
    cluster = None
    try:
        for backend in args.backends:
            for n in args.processes:
                if backend == "postgresql":
                    if cluster is None:
                        from pgcluster import PgCluster
                        if args.pg_url:
                            os.environ["CAVEAT_TEST_PG_URL"] = args.pg_url
                        cluster = PgCluster().start()
                    target = cluster.new_url()
                else:
                    target = str(Path(tempfile.mkdtemp(prefix="caveat-bench-")) / "caveat.db")
                variants = [False, True] if backend == "postgresql" and args.compare_global_lock else [False]
                for global_lock in variants:
                    if global_lock:
                        target = cluster.new_url()
                    rate, p50, p99, check = run_once(target, n, posts, args.concurrency, global_lock)
                    name = backend + (" (one lock)" if global_lock else "")
                    print(f"{name:21s} {n} process{'es' if n > 1 else '  '}: {rate:6.1f} posts/s,"
                          f" p50 {p50 * 1000:6.1f} ms, p99 {p99 * 1000:6.1f} ms; {check}", flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
