"""GET/POST /settings: the session's community settings, the same ones `/caveat setup` changes on Discord."""
from __future__ import annotations

from aiohttp import web

from bot.community import NOTE_LANGUAGES, SettingError, load_config, update_config
from bot.web.keys import PIPELINE, SESSION, STORE
from bot.web.render import render

FIELDS = ("mod_channel_id", "oncall_role_id", "locale", "shadow_mode", "note_language", "realert_minutes")


async def _page(request: web.Request, *, error: str | None = None, saved: bool = False, status: int = 200,
                values: dict | None = None) -> web.Response:
    policy = request.app[PIPELINE].policy
    config = await load_config(request.app[STORE], policy, request[SESSION].community)
    return await render(request, "settings.html", status=status, config=config, error=error, saved=saved,
                        values=values or {}, locales=sorted(policy.community.crisis_resources),
                        languages=NOTE_LANGUAGES)


async def settings_page(request: web.Request) -> web.Response:
    """GET /settings: this community's settings."""
    return await _page(request, saved=request.query.get("saved") == "1")


async def settings_submit(request: web.Request) -> web.Response:
    """POST /settings: validate every field, store all or nothing, audit who changed what."""
    session = request[SESSION]
    form = await request.post()
    changes = {key: str(form.get(key, "")).strip() for key in FIELDS if key in form}
    try:
        await update_config(request.app[STORE], request.app[PIPELINE].policy, session.community,
                            session.moderator_id, changes)
    except SettingError as exc:
        return await _page(request, error=f"Nothing was saved: {exc}.", status=400, values=changes)
    raise web.HTTPSeeOther("/settings?saved=1")
