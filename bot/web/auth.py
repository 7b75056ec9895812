"""Dashboard login: one-time links per moderator (from `/caveat dashboard`), the operator token printed once
(stored hashed), server-side sessions bound to one community, CSRF on every POST."""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from aiohttp import web

from bot.storage import Store
from bot.web.keys import AUTH, SESSION

COOKIE = "caveat_session"
LOGIN_COOKIE = "caveat_login"      # double-submit CSRF token for the login form (no session yet)
SESSION_SECONDS = 12 * 3600
PUBLIC_PREFIXES = ("/static/",)
PUBLIC_PATHS = ("/login",)
PUBLIC_PREFIXES_LOGIN = "/login/link/"
NAME_RE = re.compile(r"^[\w .'-]{1,40}$")


def hash_token(token: str) -> str:
    """SHA-256 hex of a login token (only the hash is stored)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


async def ensure_token(store: Store, *, renew: bool = False) -> str | None:
    """Create the moderator token on first start (or when renewing); returns it once, else None."""
    if not renew and await store.get_setting("web", "token_sha256"):
        return None
    token = secrets.token_urlsafe(24)
    async with store.transaction():
        await store.set_setting("web", "token_sha256", hash_token(token))
        if renew:
            await store.revoke_operator_sessions()
        await store.audit("caveat", "web_token_created" if not renew else "web_token_renewed", community="")
    return token


OPERATOR_COMMUNITY = "sandbox"   # where an operator's session starts; they can switch on any page


@dataclass(frozen=True)
class Session:
    """A logged-in person: who (display name and id), which community they see, role, CSRF token."""

    sid: str
    moderator: str
    moderator_id: str
    community: str
    role: str
    csrf: str


class Auth:
    """Checks the operator token and the server-side sessions (logout and revocation end them at once)."""

    def __init__(self, store: Store, *, secure_cookies: bool = False):
        self.store = store
        self.secure_cookies = secure_cookies

    async def token_hash(self) -> str:
        """The stored hash of the current operator token ('' when none)."""
        return await self.store.get_setting("web", "token_sha256", "") or ""

    async def check_token(self, token: str) -> bool:
        """Does `token` match the stored hash? (constant-time)"""
        stored = await self.token_hash()
        return bool(stored) and hmac.compare_digest(hash_token(token), stored)

    async def start(self, *, moderator: str, moderator_id: str, community: str, role: str) -> str:
        """A new session; returns the cookie value."""
        sid, _ = await self.store.create_web_session(moderator_id=moderator_id, moderator=moderator,
                                                     community=community, role=role,
                                                     hours=SESSION_SECONDS / 3600)
        return sid

    async def session(self, request: web.Request) -> Session | None:
        """The live session of this request, or None (unknown, expired, logged out or revoked)."""
        sid = request.cookies.get(COOKIE, "")
        if not sid or len(sid) > 200:
            return None
        row = await self.store.web_session(sid)
        if row is None:
            return None
        return Session(sid, row["moderator"], row["moderator_id"], row["community_id"], row["role"], row["csrf"])

    def set_cookie(self, response: web.StreamResponse, name: str, value: str, max_age: int) -> None:
        """Set an HttpOnly, SameSite=Strict cookie."""
        response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="Strict", path="/",
                            secure=self.secure_cookies)


def _wants_html(request: web.Request) -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("Accept", "")


async def _csrf_ok(request: web.Request, expected: str) -> bool:
    sent = request.headers.get("X-CSRF-Token")
    if sent is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        sent = (await request.post()).get("csrf")
    return isinstance(sent, str) and bool(expected) and hmac.compare_digest(sent, expected)


@web.middleware
async def security_middleware(request: web.Request, handler):
    """Require a session (except login and static files), check CSRF on POST, and add security headers."""
    auth: Auth = request.app[AUTH]
    path = request.path
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or path.startswith(PUBLIC_PREFIXES_LOGIN):
        response = await handler(request)
    else:
        session = await auth.session(request)
        if session is None:
            if _wants_html(request):
                raise web.HTTPFound("/login?next=" + _safe_next(request.path_qs))
            raise web.HTTPUnauthorized(text="log in first: use /caveat dashboard in Discord, or /login with the operator"
                                            " token\n")
        if request.method == "POST" and not await _csrf_ok(request, session.csrf):
            raise web.HTTPForbidden(text="refused: missing or wrong CSRF token; reload the page and try again\n")
        request[SESSION] = session
        response = await handler(request)
    response.headers.setdefault("Content-Security-Policy",
                                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
                                " frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _safe_next(target: str) -> str:
    """Only local paths after login (no open redirects)."""
    from urllib.parse import quote
    return quote(target if target.startswith("/") and not target.startswith("//") else "/", safe="")


async def login_page(request: web.Request) -> web.Response:
    """GET /login: the token form, with a double-submit CSRF cookie."""
    from bot.web.render import render
    auth: Auth = request.app[AUTH]
    csrf = secrets.token_urlsafe(24)
    response = await render(request, "login.html", csrf=csrf, next=request.query.get("next", "/queue"), error=None)
    auth.set_cookie(response, LOGIN_COOKIE, csrf, 600)
    return response


async def login_submit(request: web.Request) -> web.Response:
    """POST /login: check CSRF, token and name; start a session."""
    from bot.web.render import render
    auth: Auth = request.app[AUTH]
    form = await request.post()
    expected = request.cookies.get(LOGIN_COOKIE, "")
    sent = form.get("csrf", "")
    if not expected or not isinstance(sent, str) or not hmac.compare_digest(sent, expected):
        raise web.HTTPForbidden(text="refused: missing or wrong CSRF token; reload the login page\n")
    name = str(form.get("name", "")).strip()
    target = str(form.get("next", "/queue"))
    target = target if target.startswith("/") and not target.startswith("//") else "/queue"
    error = None
    if not NAME_RE.match(name):
        error = "Enter your moderator name (1-40 letters, digits, spaces, . ' - or _)."
    elif not await auth.check_token(str(form.get("token", "")).strip()):
        error = "That token is not valid. Use the token `caveat serve` printed on first start (or run it with --new-token)."
    if error:
        csrf = secrets.token_urlsafe(24)
        response = await render(request, "login.html", status=401, csrf=csrf, next=target, error=error, name=name)
        auth.set_cookie(response, LOGIN_COOKIE, csrf, 600)
        return response
    value = await auth.start(moderator=name, moderator_id=f"operator:{name}", community=OPERATOR_COMMUNITY,
                             role="operator")
    response = web.HTTPSeeOther(target)
    auth.set_cookie(response, COOKIE, value, SESSION_SECONDS)
    response.del_cookie(LOGIN_COOKIE, path="/")
    await auth.store.audit(name, "web_login", community=OPERATOR_COMMUNITY, detail={"role": "operator"})
    raise response


async def link_page(request: web.Request) -> web.Response:
    """GET /login/link/{token}: confirm before spending the one-time link (link previews must not spend it)."""
    from bot.web.render import render
    auth: Auth = request.app[AUTH]
    csrf = secrets.token_urlsafe(24)
    response = await render(request, "login_link.html", csrf=csrf, token=request.match_info["token"], error=None)
    auth.set_cookie(response, LOGIN_COOKIE, csrf, 600)
    return response


async def link_submit(request: web.Request) -> web.Response:
    """POST /login/link/{token}: spend the link and start this moderator's session for their server."""
    from bot.web.render import render
    auth: Auth = request.app[AUTH]
    form = await request.post()
    expected, sent = request.cookies.get(LOGIN_COOKIE, ""), form.get("csrf", "")
    if not expected or not isinstance(sent, str) or not hmac.compare_digest(sent, expected):
        raise web.HTTPForbidden(text="refused: missing or wrong CSRF token; open the link again\n")
    link = await auth.store.use_login_link(request.match_info["token"])
    if link is None:
        return await render(request, "login_link.html", status=401, csrf="", token="",
                            error="This login link is not valid: it was already used, has expired, or was revoked."
                                  " Ask for a new one with /caveat dashboard in Discord.")
    value = await auth.start(moderator=link["moderator"], moderator_id=link["moderator_id"],
                             community=link["community_id"], role="moderator")
    response = web.HTTPSeeOther("/queue")
    auth.set_cookie(response, COOKIE, value, SESSION_SECONDS)
    response.del_cookie(LOGIN_COOKIE, path="/")
    await auth.store.audit(link["moderator_id"], "web_login", community=link["community_id"],
                           detail={"role": "moderator"})
    raise response


async def logout(request: web.Request) -> web.Response:
    """POST /logout: end the session in storage (the cookie alone is worthless afterwards)."""
    session: Session = request[SESSION]
    await request.app[AUTH].store.revoke_web_session(session.sid)
    await request.app[AUTH].store.audit(session.moderator_id, "web_logout", community=session.community)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


async def switch_community(request: web.Request) -> web.Response:
    """POST /community: an operator looks at another community; a moderator stays in their own."""
    session: Session = request[SESSION]
    if session.role != "operator":
        raise web.HTTPForbidden(text="refused: a moderator's session shows only their own server\n")
    form = await request.post()
    community = str(form.get("community", "")).strip()
    known = await request.app[AUTH].store.communities()
    if community not in known and community != OPERATOR_COMMUNITY:
        raise web.HTTPBadRequest(text=f"unknown community {community!r}\n")
    await request.app[AUTH].store.set_session_community(session.sid, community)
    raise web.HTTPSeeOther("/queue")

