"""The audit log (filterable, CSV export) and the stats page (server-rendered SVG bars)."""
from __future__ import annotations

import csv
import io
import json
from datetime import date, timedelta
from typing import overload

from aiohttp import web

from bot.web.keys import PIPELINE, SESSION, STORE
from bot.web.render import render
from policies.schema import LABELS

PAGE = 200
COLORS = {"emergency": "#c0392b", "risky_self_treatment": "#d68910", "unsupported_claim": "#2e86c1",
          "promotion": "#7d3c98", "none": "#7f8c8d"}
NOISY_RATE = 0.5   # a rule whose judged hits are dismissed this often or more is flagged as noisy
NOISY_MIN_JUDGED = 2


MAX_OFFSET = 10**9
MAX_CASE_ID = 2**63 - 1   # SQLite's largest integer: a bigger one would not even reach the query


@overload
def whole_number(raw: str | None, name: str, *, maximum: int, default: int) -> int: ...


@overload
def whole_number(raw: str | None, name: str, *, maximum: int, default: None = None) -> int | None: ...


def whole_number(raw: str | None, name: str, *, maximum: int, default: int | None = None) -> int | None:
    """A query parameter as a whole number 0..maximum (ASCII digits only); `default` when absent or empty.
    Anything else is a 400 that says what is allowed (never a 500 from int() or SQLite)."""
    raw = (raw or "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(maximum)) or int(raw) > maximum:
        shown = raw if len(raw) <= 24 else raw[:24] + "..."
        raise web.HTTPBadRequest(text=f"{name} must be a whole number from 0 to {maximum}, got {shown!r}\n")
    return int(raw)


def _audit_filters(request: web.Request) -> dict:
    q = request.query
    return {"actor": q.get("actor", "").strip() or None, "action": q.get("action", "").strip() or None,
            "case_id": whole_number(q.get("case", "").strip().lstrip("#"), "case", maximum=MAX_CASE_ID)}


async def audit_page(request: web.Request) -> web.Response:
    """GET /audit: every decision and moderator action, newest first, filterable by actor, action and case."""
    store = request.app[STORE]
    filters = _audit_filters(request)
    offset = whole_number(request.query.get("offset"), "offset", maximum=MAX_OFFSET, default=0)
    community = request[SESSION].community
    rows = await store.audit_log(community=community, **filters, limit=PAGE + 1, offset=offset)
    return await render(request, "audit.html", rows=rows[:PAGE], more=len(rows) > PAGE, offset=offset,
                        filters=filters, actions=await store.audit_actions(community),
                        query=request.query_string)


def _cell(value) -> str:
    """A CSV cell that spreadsheets will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def audit_csv(request: web.Request) -> web.Response:
    """GET /audit.csv: the filtered audit log as CSV."""
    rows = await request.app[STORE].audit_log(community=request[SESSION].community, **_audit_filters(request),
                                              limit=1_000_000)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "at", "actor", "action", "case_id", "post_id", "decision_id", "detail"])
    for r in rows:
        writer.writerow([_cell(r[k]) for k in ("id", "at", "actor", "action", "case_id", "post_id", "decision_id")]
                        + [_cell(json.dumps(r["detail"], sort_keys=True))])
    return web.Response(text=out.getvalue(), content_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="caveat-audit.csv"'})


def _per_day_chart(per_day: list[dict], days: int = 14) -> dict:
    """Stacked bars of cases per day by label for the last `days` days (SVG coordinates)."""
    end = date.today()
    if per_day:
        end = max(end, date.fromisoformat(per_day[-1]["day"]))
    span = [(end - timedelta(days=i)).isoformat() for i in range(days - 1, -1, -1)]
    counts: dict[str, dict[str, int]] = {d: {} for d in span}
    for r in per_day:
        if r["day"] in counts:
            counts[r["day"]][r["label"]] = r["n"]
    top = max([sum(c.values()) for c in counts.values()] + [1])
    height, width = 160, 34
    bars = []
    for i, day in enumerate(span):
        y = float(height)
        for label in LABELS + ("none",):
            n = counts[day].get(label, 0)
            if not n:
                continue
            h = n / top * (height - 10)
            y -= h
            bars.append({"x": i * width + 4, "y": round(y, 1), "w": width - 8, "h": round(h, 1),
                         "color": COLORS[label], "title": f"{day}: {n} {label}"})
    ticks = [{"x": i * width + width / 2, "text": day[5:]} for i, day in enumerate(span)]
    return {"bars": bars, "ticks": ticks, "width": days * width, "height": height, "top": top,
            "total": sum(sum(c.values()) for c in counts.values())}


async def stats_page(request: web.Request) -> web.Response:
    """GET /stats: cases per day by label, outcome mix, judged note precision, per-rule hits and dismiss rate."""
    stats = await request.app[STORE].stats(community=request[SESSION].community)
    outcomes = sorted(stats["cases_by_outcome"].items(), key=lambda kv: -kv[1])
    top_outcome = max([n for _, n in outcomes] + [1])
    rules = []
    for rule, entry in sorted(stats["rules"].items(), key=lambda kv: -kv[1]["hits"]):
        judged = entry["dismissed"] + entry["confirmed"]
        rules.append({"rule": rule, **entry, "judged": judged,
                      "noisy": entry["dismiss_rate"] is not None and judged >= NOISY_MIN_JUDGED
                      and entry["dismiss_rate"] >= NOISY_RATE})
    return await render(request, "stats.html", stats=stats, chart=_per_day_chart(stats["cases_per_day"]),
                        outcomes=outcomes, top_outcome=top_outcome, rules=rules, colors=COLORS,
                        labels_by_count=sorted(stats["cases_by_label"].items(), key=lambda kv: -kv[1]),
                        policy_warnings=request.app[PIPELINE].policy.warnings)
