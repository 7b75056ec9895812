"""Scoring in worker processes (`--score-workers N`) against scoring in the bot's process (not part of the tests).

    python benchmarks/score_workers.py [--posts 2000] [--workers 0,1,2] [--rate 60] [--seconds 15]

The same posts (built by benchmarks/bench.py's `make_posts` from the in-house labeled data) go through
`Pipeline.decide` (normalize, rules, model, Decision; no storage, no Discord) with 0 workers (in-process: the
model runner's threads, as `caveat run` does today) and with N worker processes. Two measurements per setting:

- burst: every post submitted at once; posts/s until the last decision, and each post's latency (mostly queueing);
- open loop: Poisson arrivals at `--rate` posts/s for `--seconds`; p50 and p99 latency from arrival to decision.

It also checks that every setting made the same decisions (labels, action, policy and model version): the
model's timeout and the workers' deadline are lifted here, so no post falls back to rules in a burst.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def burst(pipeline, posts) -> tuple[dict, list]:
    async def one(post):
        t = time.perf_counter()
        d = await pipeline.decide(post)
        return time.perf_counter() - t, d

    start = time.perf_counter()
    done = await asyncio.gather(*(one(p) for p in posts))
    wall = time.perf_counter() - start
    lat = [t for t, _ in done]
    return {"posts_per_s": len(posts) / wall, "p50_ms": pct(lat, .5) * 1e3, "p99_ms": pct(lat, .99) * 1e3}, \
        [(d.labels, d.action, d.policy_version, d.model_version) for _, d in done]


async def open_loop(pipeline, posts, rate: float, seconds: float, seed: int = 11) -> dict:
    rng = random.Random(seed)
    lat: list[float] = []
    tasks = []

    async def one(post, t0):
        await pipeline.decide(post)
        lat.append(time.perf_counter() - t0)

    start = time.perf_counter()
    due, i = start, 0
    while due - start < seconds:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(one(posts[i % len(posts)], due)))
        i += 1
        due += rng.expovariate(rate)
    await asyncio.gather(*tasks)
    return {"offered_per_s": rate, "sent": i, "p50_ms": pct(lat, .5) * 1e3, "p99_ms": pct(lat, .99) * 1e3}


async def run_setting(n: int, posts, policy, rate: float, seconds: float) -> tuple[dict, list]:
    from bot.pipeline import Pipeline
    from bot.score_workers import ScoreWorkers
    from classifiers.runner import ModelRunner
    from classifiers.serving import get_scorer

    # No fallback to rules in a burst: the model's timeout and the workers' deadline are lifted, so every setting
    # scores every post with the model (the bot keeps 10 s: a flood past that is decided by rules, with review).
    runner = ModelRunner(get_scorer(), timeout_s=3600)
    workers = None
    if n:
        t = time.perf_counter()
        workers = await ScoreWorkers(n, version=runner.version, deadline_s=3600).astart()
        started = time.perf_counter() - t
    pipeline = Pipeline(None, policy, runner, workers=workers)
    try:
        await burst(pipeline, posts[:50])  # warm up (the first calls of a fresh ONNX session are slower)
        b, decisions = await burst(pipeline, posts)
        o = await open_loop(pipeline, posts, rate, seconds)
    finally:
        if workers is not None:
            await workers.aclose()
        await runner.close()
    row = {"workers": n, "burst": b, "open_loop": o}
    if n:
        row["start_s"] = started
    return row, decisions


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--posts", type=int, default=2000)
    ap.add_argument("--workers", default="0,1,2", help="comma-separated worker counts (0: in-process)")
    ap.add_argument("--rate", type=float, default=60.0, help="open-loop arrivals per second")
    ap.add_argument("--seconds", type=float, default=15.0, help="open-loop duration")
    args = ap.parse_args()

    from bench import make_posts

    from bot.engine import Post
    from classifiers.serving import default_threads
    from policies.loader import load_policy

    policy = load_policy()
    posts = [Post("bench", str(i), "c", f"u{i % 50}", t) for i, t in enumerate(make_posts(args.posts))]
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout.strip()
    print(f"command: python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}".rstrip())
    print(f"cpu: {cpu or platform.processor()}; {os.cpu_count()} cores; python {platform.python_version()};"
          f" in-process model threads (CAVEAT_THREADS or default) {default_threads()}")
    print(f"{len(posts)} posts\n")
    print("| workers | burst posts/s | burst p50 ms | burst p99 ms | open loop | p50 ms | p99 ms | start s |")
    print("|---|---|---|---|---|---|---|---|")
    reference = None
    for n in (int(x) for x in args.workers.split(",")):
        row, decisions = asyncio.run(run_setting(n, posts, policy, args.rate, args.seconds))
        b, o = row["burst"], row["open_loop"]
        start = f"{row['start_s']:.2f}" if "start_s" in row else "–"
        print(f"| {n} | {b['posts_per_s']:.1f} | {b['p50_ms']:.0f} | {b['p99_ms']:.0f} |"
              f" {o['sent']} posts at {o['offered_per_s']:g}/s | {o['p50_ms']:.1f} | {o['p99_ms']:.1f} | {start} |",
              flush=True)
        if reference is None:
            reference = decisions
        else:
            differ = sum(a != b for a, b in zip(reference, decisions))
            if differ:
                print(f"  !! {differ} decisions differ from the first setting's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
