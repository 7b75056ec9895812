"""The sandbox channel: members' posts go through the same Pipeline as Discord, and Caveat's reply shows under them."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from aiohttp import web

from bot.engine import Post
from bot.pipeline import Outcome, Pipeline
from bot.storage.clock import utcnow
from bot.web import queries
from bot.web.auth import NAME_RE
from bot.web.keys import PIPELINE, SESSION, STORE
from bot.web.render import fragment, render

MAX_TEXT = 4000
# Example posts for a fresh database, spread over the last days so the stats have a history and the
# channel's note cooldown is not used up before the first real post.
SEED = (
    ("mira", "Put the rapa cream right on the fresh surgical wound, it stops the scar", 52),
    ("dealer_dan", "DM me, I sell sirolimus, cheaper than any pharmacy", 30),
    ("sam", "I'm thinking of stopping my sertraline cold turkey next week", 27),
    ("lee", "rapamycin cures baldness, my hairline came back in a month", 20),
    ("ana", "Don't put rapamycin on a fresh surgical wound, it slows healing", 6),
    ("kit", "I take rapamycin and got covid, any advice", 3),
    ("jo", "I want to kill myself tonight", 1),
)


def sandbox_post(name: str, text: str, *, community: str = queries.SANDBOX, now: datetime | None = None) -> Post:
    """A Post in a community's sandbox channel from the member `name`."""
    return Post(platform=queries.SANDBOX, message_id=uuid.uuid4().hex, channel_id=queries.SANDBOX,
                author_id=f"sandbox:{name.lower()}", text=text, community_id=community, author_name=name,
                channel_name=queries.SANDBOX, created_at=now)


async def post_to_sandbox(pipeline: Pipeline, name: str, text: str, *, community: str = queries.SANDBOX,
                          now: datetime | None = None) -> Outcome:
    """Run a sandbox post through the Pipeline and 'post' Caveat's reply (it is shown from storage).

    The sandbox always shows live behaviour, whatever the community's shadow mode: it is where moderators
    try what members would see."""
    post = sandbox_post(name, text, community=community, now=now)
    outcome = await pipeline.handle(post, shadow=False, now=now)
    if outcome.reply:
        await pipeline.reply_sent(post, outcome, f"sandbox-{outcome.post_id}-{outcome.reply}", now=now)
    return outcome


async def seed(pipeline: Pipeline, *, now: datetime | None = None) -> int:
    """Add the example posts once, to a database with no sandbox posts; returns how many were added."""
    store = pipeline.store
    if await store.get_setting("web", "seeded") or await store.sandbox_feed(queries.SANDBOX, limit=1):
        return 0
    now = now or utcnow()
    for name, text, hours_ago in SEED:
        await post_to_sandbox(pipeline, name, text, now=now - timedelta(hours=hours_ago))
    await store.set_setting("web", "seeded", True)
    return len(SEED)


def _validate(name: str, text: str) -> str | None:
    if not NAME_RE.match(name):
        return "Pick a member name: 1-40 letters, digits, spaces, . ' - or _."
    if not text.strip():
        return "Type a post first."
    if len(text) > MAX_TEXT:
        return f"That post is {len(text)} characters; the sandbox takes at most {MAX_TEXT}."
    return None


async def sandbox_page(request: web.Request) -> web.Response:
    """GET /sandbox: the channel with every sandbox post and Caveat's replies."""
    feed = await request.app[STORE].sandbox_feed(request[SESSION].community)
    return await render(request, "sandbox.html", feed=feed, error=None, name=request.query.get("as", "member"))


async def sandbox_submit(request: web.Request) -> web.StreamResponse:
    """POST /sandbox/post: a member posts; the fragment (fetch) or the page (plain form) shows Caveat's reply."""
    form = await request.post()
    name, text = str(form.get("name", "")).strip(), str(form.get("text", ""))
    wants_json = "application/json" in request.headers.get("Accept", "")
    error = _validate(name, text)
    if error:
        if wants_json:
            return web.json_response({"error": error}, status=400)
        feed = await request.app[STORE].sandbox_feed(request[SESSION].community)
        return await render(request, "sandbox.html", status=400, feed=feed, error=error, name=name, text=text)
    pipeline = request.app[PIPELINE]
    community = request[SESSION].community
    outcome = await post_to_sandbox(pipeline, name, text, community=community)
    if not wants_json:
        raise web.HTTPSeeOther(f"/sandbox?as={name}#post-{outcome.post_id}")
    rows = await request.app[STORE].sandbox_feed(community, post_id=outcome.post_id)
    html = fragment("_message.html", m=rows[0], policy=pipeline.policy)
    return web.json_response({"post_id": outcome.post_id, "action": outcome.decision.action if outcome.decision else None,
                              "case_id": outcome.case_id, "html": html})
