"""Rule matching against post length (issue 21): the old matcher (every term tried at every word, every term
paired with every near word, every sentence tested against every span) against the indexed, linear one.

    python benchmarks/rules_scaling.py [--old-ref 28a775e] [--old-budget 120] [--sizes 10000 100000 640000 5000000]

Synthetic posts, no member text: "mixed" is short risky phrases built from rule terms (about 1 in 5) between
runs of filler words; "repeated" is one risky sentence ("rapamycin on my wound") over and over, the worst case
for the old pairing of terms and near words. Three timings per size:
- old `RuleSet.match` (the matcher at --old-ref, loaded from git), skipped where a quadratic extrapolation of
  the previous size says it would take longer than --old-budget seconds;
- new `RuleSet.match` without the cost cap (max_chars unlimited: every rule reads the whole post);
- new `Engine.assess` as shipped (every rule reads the first MAX_ASSESSED_CHARS characters, the emergency
  rules the whole post in windows).
Each new timing is the best of 3 runs (1 run from 640 KB up).
"""
from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.engine import Engine, Post  # noqa: E402
from classifiers.rules import MAX_ASSESSED_CHARS, RuleSet  # noqa: E402
from policies.loader import load_policy  # noqa: E402

FILLER = ("the a my of and was today really just feel week doctor said maybe also then it so but "
          "honestly anyway morning coffee work sleep").split()
PHRASES = ["rapa cream on the surgical wound", "stop my meds cold turkey", "inject exosomes at home",
           "pin bpc-157 subq daily", "rapamycin regrows hair", "megadose vitamin d", "dm me i sell sirolimus"]


def mixed(n: int, seed: int = 0) -> str:
    """About n characters: risky phrases (1 in 5 items) between runs of filler words, no sentence breaks."""
    rnd = random.Random(seed)
    out, size = [], 0
    while size < n:
        item = rnd.choice(PHRASES) if rnd.random() < 0.2 else " ".join(
            rnd.choice(FILLER) for _ in range(rnd.randint(1, 6)))
        out.append(item)
        size += len(item) + 1
    return " ".join(out)[:n]


def repeated(n: int) -> str:
    """One risky sentence over and over (n characters)."""
    return ("rapamycin on my wound " * (n // 22 + 1))[:n]


def old_ruleset(ref: str, rules):
    """The RuleSet class of classifiers/rules.py (with its normalize.py) at git `ref`."""
    def source(path: str) -> str:
        return subprocess.run(["git", "show", f"{ref}:{path}"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout
    norm = types.ModuleType("old_normalize")
    sys.modules["old_normalize"] = norm
    exec(compile(source("classifiers/normalize.py"), "old_normalize", "exec"), norm.__dict__)
    mod = types.ModuleType("old_rules")
    sys.modules["old_rules"] = mod
    code = source("classifiers/rules.py").replace("from classifiers.normalize import", "from old_normalize import")
    exec(compile(code, "old_rules", "exec"), mod.__dict__)
    return mod.RuleSet(rules)


def best(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old-ref", default="28a775e", help="git commit with the old matcher (default: 28a775e)")
    ap.add_argument("--old-budget", type=float, default=120.0, help="skip old runs predicted to take longer (s)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 640_000, 5_000_000])
    args = ap.parse_args(argv)

    policy = load_policy()
    old = old_ruleset(args.old_ref, policy.rules)
    uncapped = RuleSet(policy.rules, max_chars=10**12)
    engine = Engine(policy)
    print(f"cap: MAX_ASSESSED_CHARS = {MAX_ASSESSED_CHARS:,}; old matcher from {args.old_ref}")
    print("| post | chars | old match s | new match s (no cap) | speed-up | new assess s (cap) | hits old/new/capped |")
    print("|---|---|---|---|---|---|---|")
    for name, make in (("mixed", mixed), ("repeated", repeated)):
        last = None  # (size, old seconds)
        for n in args.sizes:
            text = make(n)
            runs = 3 if n < 640_000 else 1
            t_new = best(lambda: uncapped.match(text), runs)
            new_hits = uncapped.match(text)
            post = Post("bench", "1", "bench", "bench", text)
            t_assess = best(lambda: engine.assess(post), runs)
            capped_hits = engine.assess(post).rule_hits
            predicted = last[1] * (n / last[0]) ** 2 if last else 0.0
            if predicted <= args.old_budget:
                t0 = time.perf_counter()
                old_hits = old.match(text)
                t_old = time.perf_counter() - t0
                last = (n, t_old)
                same = [(h.rule_id, h.suppressed_by, [(s.start, s.end) for s in h.spans]) for h in old_hits] == \
                       [(h.rule_id, h.suppressed_by, [(s.start, s.end) for s in h.spans]) for h in new_hits]
                old_cell, speed = f"{t_old:.2f}", f"{t_old / t_new:.0f}×" + ("" if same else " (HITS DIFFER)")
                n_old = str(len(old_hits))
            else:
                old_cell, speed, n_old = f"skipped (~{predicted:.0f} s predicted)", "–", "–"
            print(f"| {name} | {n:,} | {old_cell} | {t_new:.3f} | {speed} | {t_assess:.3f} | "
                  f"{n_old}/{len(new_hits)}/{len(capped_hits)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
