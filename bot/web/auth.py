"""Dashboard login: one-time links per moderator (from `/caveat dashboard`), the operator token printed once
(stored hashed), server-side sessions bound to one community, CSRF on every POST."""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable
from urllib.parse import quote, unquote, urlsplit

from aiohttp import web

from bot.storage.contract import Storage
from bot.web.keys import AUTH, SESSION

COOKIE = "caveat_session"
LOGIN_COOKIE = "caveat_login"      # double-submit CSRF token for the login form (no session yet)
SESSION_SECONDS = 12 * 3600
PUBLIC_PREFIXES = ("/static/",)
PUBLIC_PATHS = ("/login", "/healthz", "/metrics")  # ops pages: counts only, never text
PUBLIC_PREFIXES_LOGIN = "/login/link/"
NAME_RE = re.compile(r"^[\w .'-]{1,40}$")
DEFAULT_NEXT = "/queue"
# A login's `next` may only name a path on this site: printable ASCII, no spaces or controls (see `safe_target`).
_PATH_RE = re.compile(r"^/[!-~]*$")
LOGIN_FAILURES = 5             # failed logins (token form and one-time links together) per client address...
LOGIN_WINDOW_SECONDS = 300     # ...within this many seconds; then 429 until the oldest failure ages out
log = logging.getLogger("caveat.web.auth")


def hash_token(token: str) -> str:
    """SHA-256 hex of a login token (only the hash is stored)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def client_key(request: web.Request) -> str:
    """The address failed logins are counted against: the peer's IP (an IPv6 client by its /64, which one
    machine usually holds whole). Behind a reverse proxy every client shares the proxy's address."""
    remote = request.remote or "unknown"
    try:
        ip = ipaddress.ip_address(remote)
    except ValueError:
        return remote[:64]
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class LoginThrottle:
    """Failed logins per client address in a sliding window, in this process's memory (a restart forgets them;
    several `caveat serve` processes would each count their own)."""

    MAX_CLIENTS = 10_000

    def __init__(self, limit: int = LOGIN_FAILURES, window: float = LOGIN_WINDOW_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self._failures: dict[str, deque] = {}

    def _recent(self, key: str) -> deque | None:
        now = self.clock()
        q = self._failures.get(key)
        if q is None:
            return None
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._failures[key]
            return None
        return q

    def retry_after(self, key: str) -> int:
        """Seconds until `key` may try again (0 when it may now)."""
        q = self._recent(key)
        if q is None or len(q) < self.limit:
            return 0
        return max(1, math.ceil(q[-self.limit] + self.window - self.clock()))

    def refund(self, key: str) -> None:
        """Take back one charged attempt (it succeeded)."""
        q = self._failures.get(key)
        if q:
            q.pop()
            if not q:
                del self._failures[key]

    def count(self, key: str) -> int:
        """Failures (and attempts in flight) of `key` in the window."""
        q = self._recent(key)
        return len(q) if q else 0

    def failed(self, key: str) -> int:
        """Count one failure (or charge an attempt before checking it); returns the count of `key` in the window."""
        q = self._recent(key)
        if q is None:
            if len(self._failures) >= self.MAX_CLIENTS:
                for k in list(self._failures):   # forget clients whose failures aged out, else the oldest
                    self._recent(k)
                if len(self._failures) >= self.MAX_CLIENTS:
                    del self._failures[next(iter(self._failures))]
            q = self._failures[key] = deque()
        q.append(self.clock())
        return len(q)


async def ensure_token(store: Storage, *, renew: bool = False) -> str | None:
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

    def __init__(self, store: Storage, *, secure_cookies: bool = False, throttle: LoginThrottle | None = None):
        self.store = store
        self.secure_cookies = secure_cookies
        self.throttle = throttle or LoginThrottle()

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
    sent: object = request.headers.get("X-CSRF-Token")  # a form field may also be bytes or a file
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


def safe_target(target: object, default: str = DEFAULT_NEXT) -> str:
    """`target` if it is a path on this site, else `default` (no open redirects).

    Normalised the way a browser reads a Location first: tabs and newlines dropped, backslashes as slashes;
    then it must be a plain absolute path ("/queue?status=all"), not "//host", "/\\host", "/%2F/host",
    a scheme or anything with spaces or control characters."""
    if not isinstance(target, str) or len(target) > 2000:
        return default
    cleaned = re.sub(r"[\t\n\r]", "", target).replace("\\", "/")
    if not _PATH_RE.match(cleaned) or cleaned.startswith("//"):
        return default
    decoded = unquote(cleaned).replace("\\", "/")
    if decoded.startswith("//") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
        return default
    parts = urlsplit(cleaned)
    if parts.scheme or parts.netloc or not parts.path.startswith("/"):
        return default
    return cleaned


def _safe_next(target: str) -> str:
    """The `next=` value for the login page: a local path, URL-encoded."""
    return quote(safe_target(target, "/"), safe="")


def _too_many(retry_after: int) -> str:
    minutes = max(1, math.ceil(retry_after / 60))
    return (f"Too many failed logins from your address: try again in {minutes} minute{'s' if minutes != 1 else ''}."
            " Failed logins are logged.")


def _charge(request: web.Request) -> str:
    """Count an attempt as failed before checking it, so that parallel guesses cannot slip past the limit
    (a successful one is refunded); returns the client's key."""
    key = client_key(request)
    request.app[AUTH].throttle.failed(key)
    return key


async def _login_failed(request: web.Request, key: str, via: str, reason: str) -> None:
    """Log and audit one failed login (already counted by `_charge`): the address, the way in and why; never the
    token, the link or the name typed (a token pasted into the name field would otherwise be kept)."""
    auth: Auth = request.app[AUTH]
    count = auth.throttle.count(key)
    log.warning("failed dashboard login from %s via %s: %s (%d of %d allowed in %d s)", key, via, reason, count,
                auth.throttle.limit, auth.throttle.window)
    await auth.store.audit("anonymous", "web_login_failed", community="",
                           detail={"ip": key, "via": via, "reason": reason, "recent_failures": count})
    if count >= auth.throttle.limit:
        log.warning("dashboard logins from %s refused for %d s after %d failures", key,
                    auth.throttle.retry_after(key), count)


def _throttled(request: web.Request) -> int:
    """Seconds this client must wait before another login attempt (0 = go ahead)."""
    return request.app[AUTH].throttle.retry_after(client_key(request))


async def login_page(request: web.Request) -> web.Response:
    """GET /login: the token form, with a double-submit CSRF cookie."""
    from bot.web.render import render
    auth: Auth = request.app[AUTH]
    csrf = secrets.token_urlsafe(24)
    response = await render(request, "login.html", csrf=csrf, next=safe_target(request.query.get("next")),
                            error=None)
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
    target = safe_target(form.get("next", DEFAULT_NEXT))
    error, status, wait = None, 401, _throttled(request)
    if wait:
        error, status = _too_many(wait), 429
    elif not NAME_RE.match(name):
        error = "Enter your moderator name (1-40 letters, digits, spaces, . ' - or _)."
    else:
        key = _charge(request)
        if await auth.check_token(str(form.get("token", "")).strip()):
            auth.throttle.refund(key)
        else:
            error = ("That token is not valid. Use the token `caveat serve` printed on first start (or run it with"
                     " --new-token).")
            await _login_failed(request, key, "token", "wrong token")
    if error:
        csrf = secrets.token_urlsafe(24)
        response = await render(request, "login.html", status=status, csrf=csrf, next=target, error=error, name=name)
        auth.set_cookie(response, LOGIN_COOKIE, csrf, 600)
        if wait:
            response.headers["Retry-After"] = str(wait)
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
    wait = _throttled(request)
    if wait:
        response = await render(request, "login_link.html", status=429, csrf="", token="", error=_too_many(wait))
        response.headers["Retry-After"] = str(wait)
        return response
    key = _charge(request)
    link = await auth.store.use_login_link(request.match_info["token"])
    if link is None:
        await _login_failed(request, key, "link", "unknown, used, expired or revoked link")
        return await render(request, "login_link.html", status=401, csrf="", token="",
                            error="This login link is not valid: it was already used, has expired, or was revoked."
                                  " Ask for a new one with /caveat dashboard in Discord.")
    auth.throttle.refund(key)
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

