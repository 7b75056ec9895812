"""Moderator login: a token printed once (stored hashed), signed session cookies, CSRF on every POST."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass

from aiohttp import web

from bot.storage import Store
from bot.web.keys import AUTH, SESSION

COOKIE = "caveat_session"
LOGIN_COOKIE = "caveat_login"      # double-submit CSRF token for the login form (no session yet)
SESSION_SECONDS = 12 * 3600
PUBLIC_PREFIXES = ("/static/",)
PUBLIC_PATHS = ("/login",)
NAME_RE = re.compile(r"^[\w .'-]{1,40}$")


def hash_token(token: str) -> str:
    """SHA-256 hex of a login token (only the hash is stored)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


async def ensure_token(store: Store, *, renew: bool = False) -> str | None:
    """Create the moderator token on first start (or when renewing); returns it once, else None."""
    if not renew and await store.get_setting("web", "token_sha256"):
        return None
    token = secrets.token_urlsafe(24)
    await store.set_setting("web", "token_sha256", hash_token(token))
    await store.audit("caveat", "web_token_created" if not renew else "web_token_renewed")
    return token


@dataclass(frozen=True)
class Session:
    """A logged-in moderator: display name, CSRF token, expiry (unix seconds)."""

    moderator: str
    csrf: str
    expires: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Auth:
    """Signs and checks session cookies; the secret is $CAVEAT_WEB_SECRET or random per process."""

    def __init__(self, store: Store, secret: bytes, *, secure_cookies: bool = False):
        self.store = store
        self.secret = secret
        self.secure_cookies = secure_cookies

    async def token_hash(self) -> str:
        """The stored hash of the current moderator token ('' when none)."""
        return await self.store.get_setting("web", "token_sha256", "") or ""

    async def check_token(self, token: str) -> bool:
        """Does `token` match the stored hash? (constant-time)"""
        stored = await self.token_hash()
        return bool(stored) and hmac.compare_digest(hash_token(token), stored)

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.secret, payload.encode(), hashlib.sha256).digest())

    async def new_cookie(self, moderator: str) -> tuple[str, Session]:
        """A signed cookie value for a fresh session; bound to the current token, so renewing it logs all out."""
        session = Session(moderator, secrets.token_urlsafe(24), time.time() + SESSION_SECONDS)
        body = {"m": moderator, "c": session.csrf, "e": session.expires, "t": (await self.token_hash())[:16]}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}", session

    async def session(self, request: web.Request) -> Session | None:
        """The valid session of this request, or None."""
        raw = request.cookies.get(COOKIE, "")
        payload, _, sig = raw.partition(".")
        if not payload or not hmac.compare_digest(sig, self._sign(payload)):
            return None
        try:
            body = json.loads(_unb64(payload))
        except ValueError:
            return None
        if body.get("e", 0) < time.time() or body.get("t") != (await self.token_hash())[:16]:
            return None
        return Session(body["m"], body["c"], body["e"])

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
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        response = await handler(request)
    else:
        session = await auth.session(request)
        if session is None:
            if _wants_html(request):
                raise web.HTTPFound("/login?next=" + _safe_next(request.path_qs))
            raise web.HTTPUnauthorized(text="log in first: open /login with the moderator token\n")
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
    value, _ = await auth.new_cookie(name)
    response = web.HTTPSeeOther(target)
    auth.set_cookie(response, COOKIE, value, SESSION_SECONDS)
    response.del_cookie(LOGIN_COOKIE, path="/")
    await auth.store.audit(name, "web_login")
    raise response


async def logout(request: web.Request) -> web.Response:
    """POST /logout: drop the session cookie."""
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response

