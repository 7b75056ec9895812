"""The review queue and the case view, with Claim, Send note, Dismiss, Remove and Escalate (Store locking rules)."""
from __future__ import annotations

from aiohttp import web

from bot.storage import CaseConflict, CaseNotFound
from bot.web import queries
from bot.web.keys import PIPELINE, SESSION, STORE
from bot.web.render import crisis_resources, highlight, note_of, proposed_note, render

STATUSES = ("open", "claimed", "resolved", "all")
SORTS = ("severity", "oldest", "newest")
ACTIONS = {"claim": None, "send_note": "sent_note", "dismiss": "dismissed", "remove": "removed",
           "escalate": "escalated"}
NEEDS_REASON = ("dismiss", "remove", "escalate")
PAGE = 50


def _active_rules(detail: dict) -> list[dict]:
    return [h for h in detail.get("rules", []) if h.get("weight") and not h.get("suppressed_by")]


def _pick(value: str | None, allowed, default: str) -> str:
    return value if value in allowed else default


async def queue_page(request: web.Request) -> web.Response:
    """GET /queue: cases filtered by label, status and channel, sorted by severity or age."""
    store = request.app[STORE]
    q = request.query
    status = _pick(q.get("status"), STATUSES, "open")
    label = q.get("label") or None
    sort = _pick(q.get("sort"), SORTS, "severity")
    channel = q.get("channel") or None
    try:
        offset = max(0, int(q.get("offset", "0")))
    except ValueError:
        offset = 0
    rows = await store.cases(status=None if status == "all" else status, label=label, channel_id=channel,
                             sort=sort, limit=PAGE + 1, offset=offset)
    for row in rows:
        row["rules_fired"] = [h["rule"] for h in _active_rules(row["detail"])]
    filters = {"status": status, "label": label or "", "sort": sort, "channel": channel or ""}
    return await render(request, "queue.html", rows=rows[:PAGE], more=len(rows) > PAGE, offset=offset,
                        filters=filters, statuses=STATUSES, sorts=SORTS,
                        channels=await queries.case_channels(store), back=request.path_qs)


async def _case_context(request: web.Request, case_id: int) -> dict:
    store, policy = request.app[STORE], request.app[PIPELINE].policy
    try:
        case = await store.case(case_id)
    except CaseNotFound:
        raise web.HTTPNotFound(text=f"no case #{case_id}\n") from None
    detail = case["detail"]
    earlier = [c for c in await store.cases(status=None, author_id=case["author_id"], sort="newest", limit=21)
               if c["id"] != case_id][:20]
    order = [c["id"] for c in await store.cases(status="open", sort="severity", limit=500)]
    pos = order.index(case_id) if case_id in order else None
    return {
        "case": case, "detail": detail, "text_html": highlight(case["text"], detail.get("rules", [])),
        "note": note_of(policy, detail), "proposed": proposed_note(policy, detail),
        "resources": crisis_resources(policy) if case["action"] == "escalate" else (),
        "earlier": earlier, "audit": await store.audit_log(case_id=case_id, limit=50),
        "replies": await store.replies(case["post_id"]),
        "prev_id": order[pos - 1] if pos else None,
        "next_id": order[pos + 1] if pos is not None and pos + 1 < len(order) else (order[0] if pos is None and order else None),
        "reason_codes": policy.community.reason_codes, "sandbox": case["platform"] == queries.SANDBOX,
    }


def _case_id(request: web.Request) -> int:
    try:
        return int(request.match_info["case_id"])
    except ValueError:
        raise web.HTTPNotFound(text="no such case\n") from None


async def case_page(request: web.Request) -> web.Response:
    """GET /case/{id}: the post with highlighted spans, scores, proposed note, versions, history and actions."""
    ctx = await _case_context(request, _case_id(request))
    return await render(request, "case.html", error=None, done=request.query.get("done"), **ctx)


async def _send_note(request: web.Request, case: dict, moderator: str) -> None:
    """Post the proposed note into the sandbox (the only channel the dashboard can post to)."""
    store, policy = request.app[STORE], request.app[PIPELINE].policy
    if case["platform"] != queries.SANDBOX:
        raise CaseConflict(f"this post is on {case['platform']}: use the Send note button on its card there")
    note = proposed_note(policy, case["detail"])
    if note is None:
        raise CaseConflict("no caution note fits this post; dismiss, remove or escalate it instead")
    await store.claim(case["id"], moderator)  # refuses if another moderator holds the case
    if not await store.claim_reply(case["post_id"], "note"):
        raise CaseConflict("a note was already sent for this post")
    await store.set_reply_message(case["post_id"], "note", f"sandbox-{case['post_id']}-note")
    await store.record_note(case["channel_id"], case["author_id"], note.topic)
    await store.audit(moderator, "note_sent", case_id=case["id"], post_id=case["post_id"],
                      decision_id=case["decision_id"], detail={"note_id": note.id})


async def case_action(request: web.Request) -> web.Response:
    """POST /case/{id}/{action}: claim or resolve the case as this moderator."""
    store = request.app[STORE]
    case_id, action = _case_id(request), request.match_info["action"]
    if action not in ACTIONS:
        raise web.HTTPNotFound(text=f"unknown action '{action}'\n")
    moderator = request[SESSION].moderator
    form = await request.post()
    reason = str(form.get("reason", "")) or None
    codes = request.app[PIPELINE].policy.community.reason_codes
    try:
        case = await store.case(case_id)
        if action in NEEDS_REASON and reason not in codes:
            raise ValueError(f"choose a reason for '{action}' (one of: {', '.join(codes)})")
        if action == "claim":
            await store.claim(case_id, moderator)
        else:
            if action == "send_note":
                await _send_note(request, case, moderator)
            await store.resolve(case_id, moderator, ACTIONS[action], reason_code=reason)
            if action == "remove" and case["platform"] == queries.SANDBOX:
                await store.delete_post(case["platform"], case["message_id"], actor=moderator)
    except CaseNotFound:
        raise web.HTTPNotFound(text=f"no case #{case_id}\n") from None
    except (CaseConflict, ValueError) as exc:
        ctx = await _case_context(request, case_id)
        status = 400 if isinstance(exc, ValueError) else 409
        return await render(request, "case.html", status=status, error=str(exc), done=None, **ctx)
    back = str(form.get("back", ""))
    if back.startswith("/queue"):
        raise web.HTTPSeeOther(back)
    raise web.HTTPSeeOther(f"/case/{case_id}?done={action}")
