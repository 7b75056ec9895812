"""One-time login links from `/caveat dashboard`: spent once by the confirm POST (not by a GET), refused when
used or expired, audited with the moderator's Discord id; moderator sessions stay in their server and end at
once on revocation (`/caveat logout-everywhere`) or logout."""
from __future__ import annotations

from datetime import timedelta

from aiohttp.test_utils import TestClient, TestServer

from bot.storage.clock import utcnow

from web_helpers import csrf_in, link_login

MINA = "900000000000000111"
REFUSED = "This login link is not valid: it was already used, has expired, or was revoked."


async def _fresh(dash) -> TestClient:
    c = TestClient(TestServer(dash.app))
    await c.start_server()
    return c


async def _confirm(client, token: str):
    page = await client.get(f"/login/link/{token}")
    assert page.status == 200
    return await client.post(f"/login/link/{token}", data={"csrf": csrf_in(await page.text())},
                             allow_redirects=False)


async def test_a_link_logs_in_once_and_is_refused_the_second_time(dash, anon):
    token = await dash.store.create_login_link("111", MINA, "mina")
    first = await _confirm(anon, token)
    assert first.status == 303 and first.headers["Location"] == "/queue"
    cookie = first.cookies["caveat_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and token not in cookie.value
    queue = await anon.get("/queue")
    assert queue.status == 200 and "server 111" in await queue.text()

    other = await _fresh(dash)
    try:
        again = await _confirm(other, token)
        assert again.status == 401
        text = await again.text()
        assert REFUSED in text and "/caveat dashboard" in text
        assert "caveat_session" not in again.cookies
        assert (await other.get("/queue")).status == 401
    finally:
        await other.close()


async def test_an_expired_link_is_refused(dash, anon):
    expired = await dash.store.create_login_link("111", MINA, "mina", minutes=-1)
    response = await _confirm(anon, expired)
    assert response.status == 401 and REFUSED in await response.text()
    assert (await anon.get("/queue")).status == 401
    # made 20 minutes ago with the default 15 minutes of life
    old = await dash.store.create_login_link("111", MINA, "mina", now=utcnow() - timedelta(minutes=20))
    response = await _confirm(anon, old)
    assert response.status == 401 and REFUSED in await response.text()
    unknown = await _confirm(anon, "not-a-link")
    assert unknown.status == 401 and REFUSED in await unknown.text()


async def test_opening_the_link_does_not_spend_it(dash, anon):
    token = await dash.store.create_login_link("111", MINA, "mina")
    for _ in range(3):   # link previews and a moderator reopening the tab
        page = await anon.get(f"/login/link/{token}")
        assert page.status == 200 and f'action="/login/link/{token}"' in await page.text()
    response = await _confirm(anon, token)
    assert response.status == 303
    assert (await anon.get("/queue")).status == 200


async def test_the_login_confirm_needs_its_csrf_cookie_and_field(dash, anon):
    token = await dash.store.create_login_link("111", MINA, "mina")
    forged = await anon.post(f"/login/link/{token}", data={"csrf": "forged"}, allow_redirects=False)
    assert forged.status == 403
    assert (await anon.get("/queue")).status == 401
    assert (await _confirm(anon, token)).status == 303    # the refused POST did not spend it


async def test_a_link_login_is_audited_with_the_moderators_discord_id(dash, anon):
    token = await dash.store.create_login_link("111", MINA, "mina")
    await _confirm(anon, token)
    logins = await dash.store.audit_log(community="111", action="web_login")
    assert [(r["actor"], r["detail"]) for r in logins] == [(MINA, {"role": "moderator"})]
    assert await dash.store.audit_log(community="sandbox", action="web_login") == []
    html = await (await anon.get("/audit?action=web_login")).text()
    row = html.split('data-action="web_login"', 1)[1].split("</tr>", 1)[0]
    assert f"<td>{MINA}</td>" in row


async def test_a_moderator_cannot_switch_community(dash, anon):
    await link_login(anon, dash.store, "111", MINA, "mina")
    html = await (await anon.get("/queue")).text()
    assert "server 111" in html
    response = await anon.post("/community", data={"csrf": csrf_in(html), "community": "222"})
    assert response.status == 403 and "only their own server" in await response.text()
    response = await anon.post("/community", data={"csrf": csrf_in(html), "community": "sandbox"})
    assert response.status == 403
    assert "server 111" in await (await anon.get("/queue")).text()


async def test_revoking_a_moderator_ends_their_sessions_at_once(dash, anon):
    await link_login(anon, dash.store, "111", MINA, "mina")
    html = await (await anon.get("/queue")).text()
    unused = await dash.store.create_login_link("111", MINA, "mina")
    colleague = await _fresh(dash)
    elsewhere = await _fresh(dash)
    try:
        await link_login(colleague, dash.store, "111", "900000000000000999", "colleague")
        await link_login(elsewhere, dash.store, "222", MINA, "mina")      # the same person in another server

        assert await dash.store.revoke_moderator_sessions("111", MINA) == 1
        page = await anon.get("/queue", headers={"Accept": "text/html"}, allow_redirects=False)
        assert page.status == 302 and page.headers["Location"].startswith("/login")
        assert (await anon.get("/audit.csv")).status == 401
        posted = await anon.post("/logout", data={"csrf": csrf_in(html)})
        assert posted.status == 401
        # Links handed out before and not used yet are revoked too.
        again = await _confirm(anon, unused)
        assert again.status == 401 and REFUSED in await again.text()
        # Other moderators, and this moderator's session in another server, go on.
        assert (await colleague.get("/queue")).status == 200
        assert (await elsewhere.get("/queue")).status == 200
    finally:
        await colleague.close()
        await elsewhere.close()


async def test_logout_then_the_old_cookie_is_worthless(dash, anon):
    token = await dash.store.create_login_link("111", MINA, "mina")
    response = await _confirm(anon, token)
    sid = response.cookies["caveat_session"].value
    replay = await _fresh(dash)     # someone holding a copy of the cookie
    try:
        replay.session.cookie_jar.update_cookies({"caveat_session": sid})
        assert (await replay.get("/queue")).status == 200
        html = await (await anon.get("/queue")).text()
        out = await anon.post("/logout", data={"csrf": csrf_in(html)}, allow_redirects=False)
        assert out.status == 303 and out.headers["Location"] == "/login"
        logouts = await dash.store.audit_log(community="111", action="web_logout")
        assert [r["actor"] for r in logouts] == [MINA]

        assert (await replay.get("/queue")).status == 401
        page = await replay.get("/queue", headers={"Accept": "text/html"}, allow_redirects=False)
        assert page.status == 302 and page.headers["Location"].startswith("/login")
        # The spent link does not come back to life either.
        again = await _confirm(replay, token)
        assert again.status == 401 and REFUSED in await again.text()
    finally:
        await replay.close()
