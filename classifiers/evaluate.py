"""`caveat eval`: per-label metrics for the model and for rules alone, plots, and operating-point selection.

Operating points (written with --write-thresholds):
- note (public caution note): maximum recall with precision >= 0.95
- queue (moderator review): the highest threshold with recall >= 0.90
- escalate (emergency): the highest threshold with recall >= 0.98
"""
from __future__ import annotations

import json
import sys
from typing import Any
from pathlib import Path

import yaml

from bot.engine import Engine, Post
from classifiers.metrics import label_metrics, max_recall_at_precision, pr_points, threshold_for_recall
from policies.loader import PolicyError, load_policy
from policies.schema import LABELS

NOTE_PRECISION = 0.95
QUEUE_RECALL = 0.90
ESCALATE_RECALL = 0.98
# A public note needs the model to say "more likely than not": a dev set this separable would otherwise
# put note thresholds near zero, which does not survive posts unlike the dev set.
NOTE_FLOOR = 0.5


def choose_points(scores: list[float], positive: list[bool], label: str, eval_set: str, fallback: dict) -> dict:
    """Operating points for one label, each with provenance and the dev numbers it was chosen at."""
    out: dict[str, dict[str, Any]] = {}
    wanted = {"escalate": ("recall", ESCALATE_RECALL)} if label == "emergency" else {
        "note": ("precision", NOTE_PRECISION), "queue": ("recall", QUEUE_RECALL)}
    for band, (kind, target) in wanted.items():
        found = (max_recall_at_precision(scores, positive, target) if kind == "precision"
                 else threshold_for_recall(scores, positive, target))
        rule = f"max recall @ precision>={target}" if kind == "precision" else f"highest threshold with recall>={target}"
        if found is None or found[0] <= 0:
            prev = fallback.get(band, {"value": 0.5})
            out[band] = {"value": float(prev["value"]), "chosen_by": f"{rule}: not reachable on {eval_set}, kept previous value",
                         "eval_set": eval_set}
        else:
            t, p, r = found
            value = round(float(t) - 1e-6, 6)
            if band == "note" and value < NOTE_FLOOR:
                value, rule = NOTE_FLOOR, f"{rule}, floored at {NOTE_FLOOR}"
                flagged = [s >= value for s in scores]
                tp = sum(1 for f, pos in zip(flagged, positive) if f and pos)
                p = tp / max(1, sum(flagged))
                r = tp / max(1, sum(positive))
            out[band] = {"value": value, "chosen_by": rule, "eval_set": eval_set,
                         "metrics": {"precision": round(p, 4), "recall": round(r, 4)}}
    if "note" in out and "queue" in out and out["queue"]["value"] > out["note"]["value"]:
        out["queue"]["value"] = out["note"]["value"]
        out["queue"]["chosen_by"] += " (capped at the note threshold)"
    return out


def _plots(out: Path, gold: list[str], systems: dict[str, list[list[float]]]) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    files = []
    fig, axes = plt.subplots(1, len(LABELS), figsize=(4 * len(LABELS), 3.6))
    for j, label in enumerate(LABELS):
        ax = axes[j]
        positive = [g == label for g in gold]
        for name, rows in systems.items():
            pts = pr_points([r[j] for r in rows], positive)
            ax.plot([p[2] for p in pts], [p[1] for p in pts], marker="." if name == "rules" else None, label=name)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "pr_curves.png", dpi=90)
    plt.close(fig)
    files.append(str(out / "pr_curves.png"))
    if "model" in systems:
        fig, axes = plt.subplots(1, len(LABELS), figsize=(4 * len(LABELS), 3.2))
        for j, label in enumerate(LABELS):
            pos = [r[j] for r, g in zip(systems["model"], gold) if g == label]
            neg = [r[j] for r, g in zip(systems["model"], gold) if g != label]
            axes[j].hist([neg, pos], bins=20, range=(0, 1), label=["other", label], log=True)
            axes[j].set_title(f"model score: {label}", fontsize=9)
            axes[j].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "score_histograms.png", dpi=90)
        plt.close(fig)
        files.append(str(out / "score_histograms.png"))
    return files


def _decision_thresholds(policy, mode: str) -> dict[str, float]:
    """The lowest band threshold per label: at or above it, Caveat acts (note, queue or escalate)."""
    out = {}
    for label in LABELS:
        values = [op.value for op in policy.thresholds.get(mode, {}).get(label, {}).values()]
        out[label] = min(values) if values else 1.01
    return out


def _print_table(title: str, m: dict) -> None:
    print(f"\n{title}: macro-F1 {m['macro_f1']:.3f}, benign false-positive rate {m['benign_fpr']:.3f} (n={m['n']})")
    for label, v in m["per_label"].items():
        print(f"  {label:22s} P {v['precision']:.3f}  R {v['recall']:.3f}  F1 {v['f1']:.3f}  (n={v['support']})")


def write_thresholds(policy_dir: str, points: dict) -> None:
    """Rewrite thresholds.yaml with new points; restore the old file if the result does not validate."""
    path = Path(policy_dir) / "thresholds.yaml"
    old = path.read_text(encoding="utf-8")
    header = "# Operating points per label and band, with provenance. `caveat eval --write-thresholds` rewrites this file.\n"
    path.write_text(header + yaml.safe_dump({"thresholds": points}, sort_keys=False, width=120), encoding="utf-8")
    try:
        load_policy(policy_dir)
    except PolicyError:
        path.write_text(old, encoding="utf-8")
        raise


def _install_combine(policy_dir: str, model_dir) -> str | None:
    """Copy the model's fitted combination (combine.yaml in its artifact) into the policy; returns what was done."""
    from classifiers.serving import artifact_path
    src = artifact_path(model_dir) / "combine.yaml"
    if not src.is_file():
        return None
    dest = Path(policy_dir) / "combine.yaml"
    old = dest.read_text(encoding="utf-8") if dest.is_file() else None
    data = yaml.safe_load(src.read_text(encoding="utf-8"))
    if old:  # keep the policy's own rule floor
        data["combine"]["rule_floor"] = (yaml.safe_load(old) or {}).get("combine", {}).get("rule_floor", {"queue_at_weight": 0.6})
    header = "# How model scores and rule hits combine (bot/engine/engine.py). Fitted by `caveat train`, installed by `caveat eval --write-thresholds`.\n"
    dest.write_text(header + yaml.safe_dump(data, sort_keys=False, width=120), encoding="utf-8")
    try:
        load_policy(policy_dir)
    except PolicyError:
        if old is None:
            dest.unlink()
        else:
            dest.write_text(old, encoding="utf-8")
        raise
    return str(dest)


def _print_real(title: str, m: dict) -> None:
    print(f"\n{title}: n={m['n']}, macro-F1 {m['macro_f1']:.3f}, benign public-action rate {m['benign_public_rate']:.3f}, "
          f"benign any-action rate {m['benign_any_rate']:.3f}, emergency recall {m['emergency_recall_any']:.3f} "
          f"(escalated {m['emergency_recall_escalated']:.3f})")
    for label, v in m["per_label"].items():
        pub = (f"; public: {v['public_n']} posts, precision {v['public_precision']:.3f}" if v.get("public_n")
               else "; public: none")
        print(f"  {label:22s} P {v['precision']:.3f}  R {v['recall']:.3f}  F1 {v['f1']:.3f}  (n={v['support']}{pub})")


def main_real(args) -> int:
    """`caveat eval` with no FILE: real-dev first (cross-validated operating points), then the in-house dev set."""
    from classifiers import evaluate_real as er
    from classifiers.realdata import DataMissing, default_data_dir, read_dev
    from classifiers.serving import ModelUnavailable, get_scorer

    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    try:
        if data_dir is None:
            raise DataMissing("no data directory: pass --data-dir DIR (the folder holding real-dev/) or set CAVEAT_DATA_DIR")
        rows = read_dev(data_dir)
    except DataMissing as exc:
        print(f"caveat: {exc}", file=sys.stderr)
        return 2
    policy = load_policy(args.policy)
    try:
        clf = get_scorer(args.model, backend=args.backend)
    except ModelUnavailable as exc:
        print(f"caveat: model unavailable ({exc})", file=sys.stderr)
        return 2
    if args.write_thresholds:
        done = _install_combine(policy.directory, args.model)
        policy = load_policy(policy.directory)
        if done:
            print(f"installed the model's rule-model combination in {done}")
    if policy.combine.model_version not in (None, clf.version):
        print(f"caveat: warning: combine.yaml was fitted for {policy.combine.model_version}, scoring with {clf.version}",
              file=sys.stderr)
    engine = Engine(policy)
    print(f"scoring {len(rows)} real-dev posts with {clf.version} ({clf.backend})", file=sys.stderr)
    raw = clf.predict([engine.model_input(r["text"]) for r in rows], batch_size=64)
    decisions = [engine.assess(Post("eval", str(i), "eval", "eval", r["text"]), p, model_version=clf.version)
                 for i, (r, p) in enumerate(zip(rows, raw))]
    scores = [[d.scores[lab] for lab in LABELS] for d in decisions]
    rule_actions = [{lab: er.label_action(lab, d.rule_scores[lab], {b: op.value for b, op in policy.thresholds["rules_only"][lab].items()},
                                          policy.labels[lab].bands) for lab in LABELS} for d in decisions]
    report = er.evaluate(rows, scores, policy, floored=[er.floored_labels(d, policy) for d in decisions])
    print(f"\n== real-dev ({data_dir / 'real-dev'}): operating points chosen on 4 of {er.FOLDS} folds, "
          f"numbers from the held-out fold ==")
    _print_real("model + rules, all rows", report["all"])
    _print_real("model + rules, without borderline rows", report["without_borderline"])
    _print_real("rules only (rules_only thresholds), all rows", er.metrics(rows, rule_actions))
    print("\nper source (model + rules, held-out folds):")
    for source, m in report["per_source"].items():
        f1 = ", ".join(f"{lab[:5]} {v['f1']:.2f}/{v['support']}" for lab, v in m["per_label"].items() if v["support"])
        br = f"benign public {m['benign_public_rate']:.3f} of {m['benign_n']}" if m["benign_n"] else "no benign rows"
        print(f"  {source:24s} n={m['n']:4d}  F1/n: {f1 or '-'};  {br}")
    if args.write_thresholds:
        points = {m: {lab: {b: op.model_dump() for b, op in bands.items()} for lab, bands in per.items()}
                  for m, per in policy.thresholds.items()}
        chosen = er.choose(scores, [r["label"] for r in rows])
        eval_set = args.eval_set or f"real-dev ({len(rows)} posts)"
        rules = {"note": f"lowest with precision>={er.NOTE_PRECISION}, floor {er.NOTE_FLOOR}",
                 "queue": "best F1, at most the note threshold",
                 "escalate": f"lowest with precision>={er.ESCALATE_PRECISION}, floor {er.ESCALATE_FLOOR}"}
        cv = report["all"]
        points["model"] = {}
        for lab in LABELS:
            for band, value in chosen[lab].items():
                rule = rules[band] if not (lab == "emergency" and band == "queue") else \
                    f"highest with recall>={er.EMERGENCY_RECALL}, at most the escalate threshold"
                lo, hi = policy.bounds(lab, band)
                clamped = min(max(float(value), lo), hi)
                if clamped != float(value):  # e.g. precision 0.9 unreachable: stay inside the policy's bounds
                    rule += f"; clamped to the policy bound {clamped:g} (chosen value {float(value):.3f})"
                points["model"].setdefault(lab, {})[band] = {
                    "value": round(clamped, 6), "chosen_by": rule, "eval_set": eval_set,
                    "metrics": {"cv_precision": cv["per_label"][lab]["precision"], "cv_recall": cv["per_label"][lab]["recall"]}}
        for lab in LABELS:  # every band the policy names needs a rules_only threshold too; a new milder band
            for band in chosen[lab]:  # starts at the harshest existing one, so it adds nothing until someone tunes it
                have = points.setdefault("rules_only", {}).setdefault(lab, {})
                if band not in have:
                    have[band] = {"value": max((p["value"] for p in have.values()), default=1.0),
                                  "chosen_by": "same as the harsher band until tuned", "eval_set": eval_set}
        write_thresholds(policy.directory, points)
        policy = load_policy(policy.directory)
        print(f"\nwrote operating points chosen on all of real-dev to {Path(policy.directory) / 'thresholds.yaml'} "
              f"(policy {policy.version})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slim = {k: v for k, v in report.items() if k != "actions"}
    (out / "real-dev.json").write_text(json.dumps({"model_version": clf.version, "policy_version": policy.version,
                                                   **slim}, indent=2) + "\n", encoding="utf-8")
    print(f"\nreal-dev report written to {out / 'real-dev.json'}")
    inhouse = Path(__file__).resolve().parent / "data" / "dev.jsonl"
    if inhouse.is_file():
        print("\n== in-house dev set (written for this project; second to real-dev) ==")
        args.file, args.write_thresholds = str(inhouse), False
        return main(args)
    return 0


def main(args) -> int:
    """`caveat eval [FILE]`."""
    if not args.file:
        return main_real(args)
    from classifiers.train import read_rows  # imports torch (the train extra): only `caveat eval FILE` needs it
    try:
        rows = read_rows(args.file)
    except (ValueError, FileNotFoundError) as exc:
        print(f"caveat: {exc}", file=sys.stderr)
        return 2
    policy = load_policy(args.policy)
    engine = Engine(policy)
    gold = [r["label"] for r in rows]
    eval_set = args.eval_set or Path(args.file).stem
    rule_rows = [[engine.assess(Post("eval", str(i), "eval", "eval", r["text"])).rule_scores[lab] for lab in LABELS]
                 for i, r in enumerate(rows)]
    systems = {"rules": rule_rows}
    model_version: str | None = None
    from classifiers.serving import ModelUnavailable, get_scorer
    try:
        clf = get_scorer(args.model, backend=args.backend)
        model_version = clf.version
        print(f"scoring with the {clf.backend} backend", file=sys.stderr)
        raw = clf.predict([engine.model_input(r["text"]) for r in rows], batch_size=64)
        # The scores Caveat decides on: the model combined with the rules (combine.yaml), as in bot/engine/engine.py.
        model_decisions = [engine.assess(Post("eval", str(i), "eval", "eval", r["text"]), p, model_version=clf.version)
                           for i, (r, p) in enumerate(zip(rows, raw))]
        systems["model"] = [[d.scores[lab] for lab in LABELS] for d in model_decisions]
    except ModelUnavailable as exc:
        print(f"caveat: model unavailable ({exc}); evaluating rules only", file=sys.stderr)

    points = {m: {lab: {b: op.model_dump() for b, op in bands.items()} for lab, bands in per.items()}
              for m, per in policy.thresholds.items()}
    if args.write_thresholds:
        for name, mode in (("rules", "rules_only"), ("model", "model")):
            if name not in systems:
                continue
            for j, label in enumerate(LABELS):
                chosen = choose_points([r[j] for r in systems[name]], [g == label for g in gold], label, eval_set,
                                       points.get(mode, {}).get(label, {}))
                for band, point in chosen.items():  # stay inside the bounds policy.yaml sets for each band
                    lo, hi = policy.bounds(label, band)
                    if not lo <= point["value"] <= hi:
                        point["chosen_by"] += f"; clamped to the policy bound (chosen value {point['value']:.3f})"
                        point["value"] = min(max(point["value"], lo), hi)
                points.setdefault(mode, {})[label] = chosen
        write_thresholds(policy.directory, points)
        policy = load_policy(policy.directory)
        print(f"wrote operating points to {Path(policy.directory) / 'thresholds.yaml'} (policy {policy.version})")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"file": args.file, "n": len(rows), "model_version": model_version,
              "backend": clf.backend if "model" in systems else None, "policy_version": policy.version}
    for name, mode in (("rules", "rules_only"), ("model", "model")):
        if name not in systems:
            continue
        th = _decision_thresholds(policy, mode)
        m = label_metrics(gold, systems[name], th)
        report[name] = {"thresholds": th, **m}
        _print_table(f"{f'model {model_version}' if name == 'model' else 'rules only'} (acts at: "
                     + ", ".join(f"{k} {v:.3f}" for k, v in th.items()) + ")", m)
    if "model" in systems:
        from classifiers import evaluate_real as er
        if args.write_thresholds:  # the thresholds just changed: decide again under the new policy
            engine = Engine(policy)
            model_decisions = [engine.assess(Post("eval", str(i), "eval", "eval", r["text"]), p, model_version=clf.version)
                               for i, (r, p) in enumerate(zip(rows, raw))]
        decided = er.metrics(rows, [er.decided_actions(d, policy) for d in model_decisions])
        report["decided"] = decided
        print(f"\nas Caveat decides (policy thresholds, rule floor, curated rules): benign public-action rate "
              f"{decided['benign_public_rate']:.3f}, benign any-action rate {decided['benign_any_rate']:.3f}, "
              f"emergency recall {decided['emergency_recall_any']:.3f} (escalated {decided['emergency_recall_escalated']:.3f})")
        print("\nF1 gain of the model over rules only: " + ", ".join(
            f"{lab} {report['model']['per_label'][lab]['f1'] - report['rules']['per_label'][lab]['f1']:+.3f}" for lab in LABELS))
        print("\nConfusion (rows: gold, columns: model's top label)")
        conf = report["model"]["confusion"]
        cols = list(conf)
        print("  " + " " * 22 + " ".join(f"{c[:9]:>9s}" for c in cols))
        for g in cols:
            print(f"  {g:22s}" + " ".join(f"{conf[g][c]:9d}" for c in cols))
    report["plots"] = _plots(out, gold, systems)
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nplots and metrics.json written to {out}/")
    return 0
