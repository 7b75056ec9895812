"""Server-side rendering: the Jinja environment, page context, and helpers for spans, notes and excerpts."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from bot.web.keys import PIPELINE, SESSION, STORE
from bot.cases import _note, proposed_note as _proposed_note
from policies.loader import PolicySet
from policies.schema import LABELS, Note

ENV = Environment(loader=PackageLoader("bot.web", "templates"), autoescape=select_autoescape(["html"]),
                  trim_blocks=True, lstrip_blocks=True)
NAV = (("/sandbox", "Sandbox"), ("/queue", "Queue"), ("/audit", "Audit log"), ("/stats", "Stats"),
       ("/thresholds", "Thresholds"), ("/settings", "Settings"))


def highlight(text: str | None, rules: list[dict]) -> Markup:
    """The post text with matched rule spans marked (set-aside hits get a dashed mark)."""
    if text is None:
        return Markup('<em class="muted">[text removed]</em>')
    spans = []
    for hit in rules:
        if not hit.get("weight"):
            continue
        for start, end, *_ in hit.get("spans", []):
            spans.append((start, end, hit["rule"], bool(hit.get("suppressed_by"))))
    out, pos = [], 0
    for start, end, rule, suppressed in sorted(spans):
        if start < pos or end > len(text):
            continue
        cls = "hit suppressed" if suppressed else "hit"
        title = f"{rule} (set aside)" if suppressed else rule
        out.append(escape(text[pos:start]))
        out.append(Markup('<mark class="{}" title="{}">{}</mark>').format(cls, title, text[start:end]))
        pos = end
    out.append(escape(text[pos:]))
    return Markup("").join(out)


def excerpt(text: str | None, n: int = 140) -> str:
    """The first `n` characters of a post, on one line."""
    if text is None:
        return "[text removed]"
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def note_of(policy: PolicySet, detail: dict) -> Note | None:
    """The note a decision chose (None when the current policy no longer has it in use)."""
    return _note(policy, detail.get("note_id"))


def proposed_note(policy: PolicySet, case: Mapping[str, Any]) -> Note | None:
    """The note to offer a moderator: the one chooser shared with Discord (bot.cases.proposed_note)."""
    return _proposed_note(policy, case)


def crisis_resources(policy: PolicySet, locale: str | None = None):
    """Crisis lines for a locale (the community default when unknown)."""
    crisis = policy.community.crisis_resources
    return crisis.get(locale or "", crisis[policy.community.default_locale])


def age(stamp: str | None) -> str:
    """How long ago an ISO time was, in the largest whole unit ('5 min', '3 h', '2 d')."""
    if not stamp:
        return ""
    from datetime import datetime, timezone
    seconds = (datetime.now(timezone.utc) - datetime.fromisoformat(stamp)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return "just now"


ENV.filters["excerpt"] = excerpt
ENV.filters["age"] = age
ENV.globals.update(LABELS=LABELS, NAV=NAV, proposed_note=proposed_note, resources_for=crisis_resources)


async def render(request: web.Request, template: str, *, status: int = 200, **ctx) -> web.Response:
    """Render a template with the session, navigation and open-case count."""
    session = request.get(SESSION)
    base = {"session": session, "path": request.path, "open_count": None}
    if session is not None:
        store = request.app[STORE]
        base["open_count"] = await store.count_cases(community=session.community)
        base["policy"] = request.app[PIPELINE].policy
        if session.role == "operator":
            base["communities"] = sorted(set(await store.communities()) | {session.community})
    html = ENV.get_template(template).render(**base, **ctx)
    return web.Response(text=html, content_type="text/html", status=status)


def fragment(name: str, **ctx) -> str:
    """Render a partial template to a string (for fetch responses)."""
    return ENV.get_template(name).render(**ctx)
