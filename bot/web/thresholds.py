"""The threshold simulator: move a label's thresholds, see what stored judged decisions say, save with provenance."""
from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

from aiohttp import web

from bot.web.keys import PIPELINE, POLICY_DIR, POLICY_SYNC, SESSION, STORE
from bot.web.render import render
from classifiers.evaluate import write_thresholds
from policies.loader import PolicyError, PolicySet, load_policy
from policies.schema import LABELS

DECISION_MODES = {"model": ("model",), "rules_only": ("rules_only", "fallback")}


def bands(policy: PolicySet, mode: str) -> dict[str, list[str]]:
    """Per label, the band names (harshest first) that have an operating point in `mode`."""
    return {label: [b.threshold for b in policy.labels[label].bands if policy.threshold(mode, label, b.threshold)]
            for label in LABELS}


def current_values(policy: PolicySet, mode: str) -> dict[str, dict[str, float]]:
    """The saved threshold values of `mode`."""
    return {label: {b: op.value for b in names if (op := policy.threshold(mode, label, b)) is not None}
            for label, names in bands(policy, mode).items()}


def parse_values(policy: PolicySet, mode: str, form) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Candidate values from form fields `t.<label>.<band>` (missing = saved value) and the problems found."""
    values, errors = current_values(policy, mode), []
    for label, names in bands(policy, mode).items():
        for band in names:
            raw = form.get(f"t.{label}.{band}")
            if raw is None or str(raw).strip() == "":
                continue
            try:
                v = float(str(raw))
            except ValueError:
                errors.append(f"{label} {band}: '{raw}' is not a number")
                continue
            if not 0.0 <= v <= 1.0 or v != v:
                errors.append(f"{label} {band}: {v:g} is outside 0..1")
                continue
            values[label][band] = round(v, 4)
        ordered = [values[label][b] for b in names]
        if any(a < b for a, b in zip(ordered, ordered[1:])):
            errors.append(f"{label}: thresholds must not increase from the harsher band to the milder one "
                          f"({', '.join(f'{b} {values[label][b]:g}' for b in names)})")
    return values, errors


def bound_errors(policy: PolicySet, values: dict[str, dict[str, float]]) -> list[str]:
    """Values outside the min/max that policy.yaml sets for their label's band (checked before saving)."""
    errors = []
    for label, per_band in values.items():
        for band, v in per_band.items():
            lo, hi = policy.bounds(label, band)
            if v > hi:
                errors.append(f"{label} {band}: {v:g} is above the maximum {hi:g} that the policy allows for this "
                              f"threshold (policy.yaml, labels.{label})"
                              + ("; the crisis lane cannot be switched off" if label == "emergency" else ""))
            elif v < lo:
                errors.append(f"{label} {band}: {v:g} is below the minimum {lo:g} that the policy allows for this "
                              f"threshold (policy.yaml, labels.{label})")
    return errors


def simulate(mode: str, values: dict[str, dict[str, float]], decisions: list[dict], judged: list[dict]) -> dict:
    """What these thresholds would have produced over stored decisions, and precision/recall on judged ones."""
    modes = DECISION_MODES.get(mode, (mode,))
    decisions = [d for d in decisions if d["mode"] in modes]
    judged = [j for j in judged if j["mode"] in modes]
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for label, per_band in values.items():
        names = list(per_band)
        produced = dict.fromkeys(names, 0)
        for d in decisions:
            s = d["scores"].get(label, 0.0)
            band = next((b for b in names if s >= per_band[b]), None)
            if band:
                produced[band] += 1
        positives = sum(1 for j in judged if j["confirmed"] and label in j["labels"])
        out[label] = {}
        for band in names:
            v = per_band[band]
            tp = sum(1 for j in judged if j["confirmed"] and label in j["labels"] and j["scores"].get(label, 0) >= v)
            fp = sum(1 for j in judged if not j["confirmed"] and j["scores"].get(label, 0) >= v)
            out[label][band] = {"value": v, "produced": produced[band], "tp": tp, "fp": fp, "positives": positives,
                                "precision": round(tp / (tp + fp), 3) if tp + fp else None,
                                "recall": round(tp / positives, 3) if positives else None}
    return {"mode": mode, "decisions": len(decisions), "judged": len(judged), "labels": out}


def _mode(request: web.Request, policy: PolicySet, requested: str | None = None) -> str:
    mode = requested or request.query.get("mode") or ("model" if request.app[PIPELINE].scorer else "rules_only")
    return mode if mode in policy.thresholds else next(iter(policy.thresholds))


async def _simulation(request: web.Request, mode: str, values) -> dict:
    store, community = request.app[STORE], request[SESSION].community
    return simulate(mode, values, await store.decision_scores(community),
                    await store.judged_decisions(community))


async def thresholds_page(request: web.Request, *, mode: str | None = None, values=None, errors=(),
                          saved: bool = False, status: int = 200) -> web.Response:
    """GET /thresholds: sliders per label and band with the simulated outcome."""
    policy = request.app[PIPELINE].policy
    mode = _mode(request, policy, mode)
    values = values or current_values(policy, mode)
    sim = await _simulation(request, mode, values)
    return await render(request, "thresholds.html", status=status, mode=mode, modes=list(policy.thresholds),
                        sim=sim, saved_values=current_values(policy, mode), errors=list(errors),
                        saved=saved or request.query.get("saved") == "1",
                        bounds={label: {b: policy.bounds(label, b) for b in names}
                                for label, names in bands(policy, mode).items()},
                        points={label: {b: policy.threshold(mode, label, b) for b in names}
                                for label, names in bands(policy, mode).items()})


async def simulate_json(request: web.Request) -> web.Response:
    """GET /thresholds/simulate?mode=..&t.<label>.<band>=v: the simulation as JSON (live sliders)."""
    policy = request.app[PIPELINE].policy
    mode = _mode(request, policy)
    values, errors = parse_values(policy, mode, request.query)
    if errors:
        return web.json_response({"errors": errors}, status=400)
    return web.json_response(await _simulation(request, mode, values))


def _points(policy: PolicySet, mode: str, values, sim: dict, moderator: str) -> tuple[dict, dict]:
    """All operating points with `mode` updated; changed ones get new provenance. Returns (points, changes)."""
    today = date.today().isoformat()
    points: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    changes: dict[str, list[float]] = {}
    for m, per_label in policy.thresholds.items():
        points[m] = {}
        for label, per_band in per_label.items():
            points[m][label] = {}
            for band, op in per_band.items():
                point = op.model_dump(exclude_defaults=True)
                new = values.get(label, {}).get(band) if m == mode else None
                if new is not None and new != op.value:
                    r = sim["labels"][label][band]
                    changes[f"{label}.{band}"] = [op.value, new]
                    metrics = {k: float(r[k]) for k in ("precision", "recall") if r[k] is not None}
                    metrics["judged"] = float(sim["judged"])
                    point = {"value": new, "eval_set": f"moderator-judged decisions to {today}", "metrics": metrics,
                             "chosen_by": f"set by {moderator} in the dashboard on {today}: simulated precision "
                                          f"{_fmt(r['precision'])}, recall {_fmt(r['recall'])} on {sim['judged']} judged"}
                points[m][label][band] = point
    return points, changes


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


async def thresholds_submit(request: web.Request) -> web.Response:
    """POST /thresholds: simulate (op=simulate) or validate, write the policy YAML with provenance and reload it."""
    pipeline = request.app[PIPELINE]
    policy = pipeline.policy
    form = await request.post()
    mode = _mode(request, policy, str(form.get("mode", "")) or None)
    values, errors = parse_values(policy, mode, form)
    if errors:
        return await thresholds_page(request, mode=mode, errors=errors, status=400)
    if form.get("op") != "save":
        return await thresholds_page(request, mode=mode, values=values)
    if request[SESSION].role != "operator":
        # Thresholds are one policy file shared by every server this bot serves: only its operator saves them.
        return await thresholds_page(request, mode=mode, values=values, status=403, errors=[
            "only the bot's operator can save thresholds: they apply to every server this bot serves"])
    out_of_bounds = bound_errors(policy, values)
    if out_of_bounds:
        return await thresholds_page(request, mode=mode, values=values, status=400,
                                     errors=["refused, the policy file was left as it was:"] + out_of_bounds)
    sim = await _simulation(request, mode, values)
    moderator = request[SESSION].moderator
    points, changes = _points(policy, mode, values, sim, moderator)
    if not changes:
        return await thresholds_page(request, mode=mode, errors=["nothing changed: move a threshold first"], status=400)
    # The files of the policy in force (which another process may have published), not whatever the configured
    # folder holds: a threshold save must not undo someone else's rules or notes.
    policy_dir = policy.directory or request.app[POLICY_DIR]
    try:
        await asyncio.to_thread(write_thresholds, policy_dir, points)
        new_policy = await asyncio.to_thread(load_policy, policy_dir)
    except PolicyError as exc:
        return await thresholds_page(request, mode=mode, values=values, status=400,
                                     errors=["refused, the policy file was left as it was:"] + [str(i) for i in exc.issues])
    pipeline.set_policy(new_policy)
    sync = request.app.get(POLICY_SYNC)
    if sync is not None:  # in force for every process on this database (the bot's shards too)
        await sync.publish(new_policy, actor=moderator)
    await request.app[STORE].audit(moderator, "thresholds_saved", community=request[SESSION].community,
                                   detail={"mode": mode, "changes": changes, "policy_version": new_policy.version})
    raise web.HTTPSeeOther(f"/thresholds?mode={mode}&saved=1")
