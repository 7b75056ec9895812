"""The review queue and the case view. Every action is `bot.cases.CaseService`'s, the same as on Discord;
the dashboard shows one community at a time (the session's)."""
from __future__ import annotations

from typing import cast

from aiohttp import web

from bot.cases import CaseConflict, CaseNotFound, CaseService
from bot.storage.contract import Storage
from bot.web import queries
from bot.web.keys import PIPELINE, SESSION, STORE
from bot.web.reports import MAX_OFFSET, whole_number
from bot.web.render import crisis_resources, highlight, note_of, proposed_note, render

STATUSES = ("open", "claimed", "resolved", "all")
SORTS = ("severity", "oldest", "newest")
ACTIONS = ("claim", "unclaim", "send_note", "dismiss", "remove", "escalate")
NEEDS_REASON = ("dismiss", "remove", "escalate")
PAGE = 50


def _active_rules(detail: dict) -> list[dict]:
    return [h for h in detail.get("rules", []) if h.get("weight") and not h.get("suppressed_by")]


def _pick(value: str | None, allowed, default: str) -> str:
    return value if value is not None and value in allowed else default


def service(request: web.Request) -> CaseService:
    """The cases service over this app's storage and policy."""
    pipeline = request.app[PIPELINE]
    return CaseService(request.app[STORE], lambda: pipeline.policy)


async def queue_page(request: web.Request) -> web.Response:
    """GET /queue: this community's cases by label, status and channel; replayed history only when asked."""
    store, community = request.app[STORE], request[SESSION].community
    q = request.query
    status = _pick(q.get("status"), STATUSES, "open")
    label = q.get("label") or None
    sort = _pick(q.get("sort"), SORTS, "severity")
    channel = q.get("channel") or None
    replayed = q.get("replayed") == "1"
    offset = whole_number(q.get("offset"), "offset", maximum=MAX_OFFSET, default=0)
    rows = [{**row, "rules_fired": [h["rule"] for h in _active_rules(row["detail"])]}
            for row in await store.cases(community=community, status=None if status == "all" else status,
                                         label=label, channel_id=channel, sort=sort, limit=PAGE + 1, offset=offset,
                                         include_replayed=replayed)]
    filters = {"status": status, "label": label or "", "sort": sort, "channel": channel or "",
               "replayed": "1" if replayed else ""}
    replay_open = len(await store.cases(community=community, kind="replay", limit=1))
    return await render(request, "queue.html", rows=rows[:PAGE], more=len(rows) > PAGE, offset=offset,
                        filters=filters, statuses=STATUSES, sorts=SORTS, replay_open=replay_open,
                        channels=await store.case_channels(community), back=request.path_qs)


async def _case_context(request: web.Request, case_id: int) -> dict:
    store, policy, community = request.app[STORE], request.app[PIPELINE].policy, request[SESSION].community
    try:
        case = await store.case(case_id, community=community)
    except CaseNotFound:
        raise web.HTTPNotFound(text=f"no case #{case_id}\n") from None
    detail = case["detail"]
    earlier = [c for c in await store.cases(community=community, status=None, author_id=case["author_id"],
                                            sort="newest", limit=21) if c["id"] != case_id][:20]
    order = [c["id"] for c in await store.cases(community=community, status="open", sort="severity", limit=500)]
    pos = order.index(case_id) if case_id in order else None
    return {
        "case": case, "detail": detail, "text_html": highlight(case["text"], detail.get("rules", [])),
        "note": note_of(policy, detail), "proposed": proposed_note(policy, case),
        "resources": crisis_resources(policy) if case["action"] == "escalate" else (),
        "earlier": earlier, "audit": await store.audit_log(community=community, case_id=case_id, limit=50),
        "replies": await store.replies(case["post_id"]),
        "pending": await store.pending_actions(community=community, case_id=case_id),
        "prev_id": order[pos - 1] if pos else None,
        "next_id": order[pos + 1] if pos is not None and pos + 1 < len(order) else (order[0] if pos is None and order else None),
        "reason_codes": policy.community.reason_codes, "sandbox": case["platform"] == queries.SANDBOX,
    }


def _case_id(request: web.Request) -> int:
    raw = request.match_info["case_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise web.HTTPNotFound(text="no such case\n")
    return int(raw)


async def case_page(request: web.Request) -> web.Response:
    """GET /case/{id}: the post with highlighted spans, scores, proposed note, versions, history and actions."""
    ctx = await _case_context(request, _case_id(request))
    return await render(request, "case.html", error=None, done=request.query.get("done"), **ctx)


async def run_sandbox_actions(store: Storage) -> None:
    """Carry out what moderators decided for sandbox posts: the dashboard is the sandbox's platform."""
    for row in await store.take_actions(queries.SANDBOX):
        post_id = cast(int, row["post_id"])  # CaseService names the post of every note and removal
        if row["kind"] == "post_note":
            await store.set_reply_message(post_id, "note", f"sandbox-{post_id}-note")
            await store.audit(row["actor"], "note_sent", community=row["community_id"], case_id=row["case_id"],
                              post_id=post_id, detail={"note_id": row["detail"].get("note_id")})
        elif row["kind"] == "delete_post":
            post = await store.post(post_id, community=row["community_id"])
            if post is not None:
                await store.delete_post(queries.SANDBOX, post["message_id"], actor=row["actor"])
        await store.finish_action(row["id"], "done")


async def case_action(request: web.Request) -> web.Response:
    """POST /case/{id}/{action}: claim, unclaim or resolve the case as this moderator, in their community."""
    case_id, action = _case_id(request), request.match_info["action"]
    if action not in ACTIONS:
        raise web.HTTPNotFound(text=f"unknown action '{action}'\n")
    session = request[SESSION]
    form = await request.post()
    reason = str(form.get("reason", "")) or None
    cases = service(request)
    try:
        if action == "claim":
            await cases.claim(session.community, case_id, session.moderator_id)
        elif action == "unclaim":
            await cases.unclaim(session.community, case_id, session.moderator_id)
        elif action == "send_note":
            await cases.send_note(session.community, case_id, session.moderator_id)
        elif action == "dismiss":
            await cases.dismiss(session.community, case_id, session.moderator_id, reason)
        elif action == "remove":
            await cases.remove(session.community, case_id, session.moderator_id, reason)
        else:
            cases._check_reason("escalate", reason)
            await cases.escalate(session.community, case_id, session.moderator_id, reason)
    except CaseNotFound:
        raise web.HTTPNotFound(text=f"no case #{case_id}\n") from None
    except (CaseConflict, ValueError) as exc:
        ctx = await _case_context(request, case_id)
        status = 400 if isinstance(exc, ValueError) else 409
        return await render(request, "case.html", status=status, error=str(exc), done=None, **ctx)
    await run_sandbox_actions(request.app[STORE])
    back = str(form.get("back", ""))
    if back.startswith("/queue"):
        raise web.HTTPSeeOther(back)
    raise web.HTTPSeeOther(f"/case/{case_id}?done={action}")


async def clear_replayed(request: web.Request) -> web.Response:
    """POST /queue/clear-replayed: close every open replayed case of this community."""
    session = request[SESSION]
    await service(request).clear_replayed(session.community, session.moderator_id)
    raise web.HTTPSeeOther("/queue")
