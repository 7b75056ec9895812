"""The frozen-encoder baseline on real-dev: int8 MiniLM embeddings + an L2 logistic head per label.

    python benchmarks/real_sweep.py --l2 0.001 0.003 0.01 0.03

This was the first recipe tried for real posts (benchmarks/RESULTS.md, "Real posts"); `caveat train` fine-tunes
instead, which measured better. Each variant fits the head on the same labelled rows `caveat train` reads, fits
the rule-model combination on out-of-fold logits of the real rows, scores real-dev, and reports
`classifiers.evaluate_real` metrics (operating points cross-validated on real-dev). Nothing is written.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.engine import Engine, Post  # noqa: E402
from classifiers import evaluate_real as er  # noqa: E402
from classifiers import train as tr  # noqa: E402
from classifiers.embed import Embedder  # noqa: E402
from classifiers.normalize import model_input  # noqa: E402
from classifiers.realdata import default_data_dir, read_dev  # noqa: E402
from classifiers.rules import RuleSet  # noqa: E402
from policies.loader import load_policy  # noqa: E402
from policies.schema import LABELS, Combine, CombineWeights  # noqa: E402


class Head:
    """Standardize, then weighted L2 logistic regression per label."""

    def __init__(self, l2: float):
        self.l2 = l2

    def fit(self, x, y, w):
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-6
        self.coef, self.bias = tr.fit_logistic((x - self.mu) / self.sd, y, w, self.l2)
        return self

    def logits(self, x):
        return ((x - self.mu) / self.sd) @ self.coef + self.bias


def group_folds(groups, k, seed):
    """Fold per row, whole groups together."""
    import hashlib
    return np.asarray([int(hashlib.sha256(f"{seed}|{g}".encode()).hexdigest(), 16) % k for g in groups])


def run(rows, x, y, w_base, real, kinds, texts, rules, dev, dev_x, policy, *, l2, real_weight, inhouse_weight,
        folds=5, seed=14, floor=None, label_only=None):
    """Fit one variant; return the evaluate_real report on real-dev."""
    w = np.asarray([wb * (real_weight if k == "real" else inhouse_weight) for wb, k in zip(w_base, kinds)])
    keep = w > 0
    fold = group_folds([r["group"] for r in rows], folds, seed)
    oof = np.zeros_like(y, dtype=np.float64)
    for k in range(folds):
        tr_idx = keep & (fold != k)
        head = Head(l2).fit(x[tr_idx], y[tr_idx], w[tr_idx])
        oof[fold == k] = head.logits(x[fold == k])
    comb = tr.fit_combiner(oof[real], rules[real], y[real], w[real])
    head = Head(l2).fit(x[keep], y[keep], w[keep])
    probs = 1 / (1 + np.exp(-head.logits(dev_x)))
    combine = Combine(model_version="sweep", fitted_on="sweep",
                      labels={lab: CombineWeights(**v) for lab, v in comb.items()},
                      **({"rule_floor": {"queue_at_weight": floor}} if floor else {}))
    from dataclasses import replace
    pol = replace(policy, combine=combine)
    engine = Engine(pol)
    scores = []
    for i, (r, p) in enumerate(zip(dev, probs)):
        d = engine.assess(Post("eval", str(i), "eval", "eval", r["text"]), dict(zip(LABELS, map(float, p))), model_version="sweep")
        scores.append([d.scores[lab] for lab in LABELS])
    return er.evaluate(dev, scores, pol), comb


def main() -> int:
    """Parse the grid, run every variant, print one line each."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--l2", type=float, nargs="+", default=[0.003])
    ap.add_argument("--real-weight", type=float, nargs="+", default=[1.0])
    ap.add_argument("--inhouse-weight", type=float, nargs="+", default=[0.3])
    ap.add_argument("--floor", type=float, nargs="+", default=[None])
    ap.add_argument("--seeds", type=int, nargs="+", default=[14])
    args = ap.parse_args()
    data_dir = default_data_dir()
    policy = load_policy()
    ruleset = RuleSet(policy.rules)
    rows, _ = tr.load_training_rows(data_dir, tr.DATA / "train.jsonl")
    texts = [model_input(r["text"], ruleset.watched) for r in rows]
    emb = Embedder()
    x = emb.embed(texts)
    y = tr.targets([r["label"] for r in rows])
    kinds = [r["kind"] for r in rows]
    real = np.asarray([k == "real" for k in kinds])
    w_base = [r["weight"] for r in rows]
    rules = tr.rule_features(texts, ruleset)
    dev = read_dev(data_dir)
    dev_x = emb.embed([model_input(r["text"], ruleset.watched) for r in dev])
    print(f"{len(rows)} training rows ({int(real.sum())} real); real-dev {len(dev)}")
    for l2, rw, iw, floor, seed in itertools.product(args.l2, args.real_weight, args.inhouse_weight, args.floor, args.seeds):
        rep, _ = run(rows, x, y, w_base, real, kinds, texts, rules, dev, dev_x, policy, l2=l2, real_weight=rw,
                     inhouse_weight=iw, floor=floor, seed=seed)
        a, nb = rep["all"], rep["without_borderline"]
        f1 = " ".join(f"{lab[:5]} {a['per_label'][lab]['f1']:.3f}" for lab in LABELS)
        print(f"l2 {l2:g} real {rw:g} inhouse {iw:g} floor {floor} seed {seed}: macro-F1 {a['macro_f1']:.3f} "
              f"(no borderline {nb['macro_f1']:.3f}) | {f1} | benign public {a['benign_public_rate']:.3f} "
              f"any {a['benign_any_rate']:.3f} | emergency recall {a['emergency_recall_any']:.3f} "
              f"(escalated {a['emergency_recall_escalated']:.3f})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
