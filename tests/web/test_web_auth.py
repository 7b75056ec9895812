"""Login, sessions, CSRF and binding rules of the dashboard."""
from __future__ import annotations

from bot.web.queries import SANDBOX

import hashlib

import pytest

from bot.web.app import bind_problem, is_loopback
from bot.web.auth import ensure_token
from bot.web.sandbox import sandbox_post

from web_helpers import csrf_in, login

PAGES = ["/queue", "/sandbox", "/audit", "/audit.csv", "/stats", "/thresholds", "/case/1", "/thresholds/simulate"]


@pytest.mark.parametrize("path", PAGES)
async def test_unauthenticated_requests_are_refused(anon, path):
    response = await anon.get(path, allow_redirects=False)
    assert response.status == 401
    assert "log in" in await response.text()


async def test_a_browser_without_a_session_is_sent_to_login(anon):
    response = await anon.get("/queue", headers={"Accept": "text/html"}, allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"].startswith("/login")


async def test_unauthenticated_posts_change_nothing(anon, dash):
    response = await anon.post("/sandbox/post", data={"name": "eve", "text": "DM me, I sell sirolimus"})
    assert response.status == 401
    assert await dash.store.count_cases(community=SANDBOX) == 0


async def test_wrong_token_is_refused(anon):
    response = await login(anon, "not-the-token")
    assert response.status == 401
    assert "not valid" in await response.text()
    assert (await anon.get("/queue")).status == 401


async def test_login_sets_an_httponly_samesite_session_cookie(anon, dash):
    page = await anon.get("/login")
    response = await anon.post("/login", allow_redirects=False,
                               data={"csrf": csrf_in(await page.text()), "name": "alice", "token": dash.token})
    assert response.status == 303
    cookie = response.cookies["caveat_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    assert dash.token not in cookie.value


async def test_login_form_without_csrf_is_refused(anon, dash):
    response = await anon.post("/login", data={"name": "alice", "token": dash.token})
    assert response.status == 403
    assert (await anon.get("/queue")).status == 401


async def test_post_without_csrf_token_is_refused(client, dash):
    response = await client.post("/sandbox/post", data={"name": "eve", "text": "DM me, I sell sirolimus"})
    assert response.status == 403
    assert "CSRF" in await response.text()
    assert await dash.store.count_cases(community=SANDBOX) == 0


async def test_post_with_a_wrong_csrf_token_is_refused(client, dash):
    await dash.pipeline.handle(sandbox_post("eve", "DM me, I sell sirolimus"))
    response = await client.post("/case/1/claim", data={"csrf": "forged"})
    assert response.status == 403
    assert (await dash.store.case(1, community=SANDBOX))["status"] == "open"


async def test_token_is_stored_only_as_a_hash_and_printed_once(store):
    token = await ensure_token(store)
    assert token and await ensure_token(store) is None
    assert await store.get_setting("web", "token_sha256") == hashlib.sha256(token.encode()).hexdigest()
    rows = await store._all("SELECT scope, key, value FROM settings")
    assert all(token not in r["value"] for r in rows)


async def test_a_new_token_logs_out_existing_sessions(client, dash):
    assert (await client.get("/queue")).status == 200
    new = await ensure_token(dash.store, renew=True)
    assert new != dash.token
    assert (await client.get("/queue")).status == 401


async def test_logout_ends_the_session(client):
    html = await (await client.get("/queue")).text()
    await client.post("/logout", data={"csrf": csrf_in(html)})
    assert (await client.get("/queue")).status == 401


async def test_no_message_text_or_token_in_logs(client, dash, caplog):
    caplog.set_level("INFO")  # what `caveat -v serve` logs
    html = await (await client.get("/sandbox")).text()
    await client.post("/sandbox/post", data={"csrf": csrf_in(html), "name": "eve", "text": "DM me, I sell sirolimus"})
    assert "sirolimus" not in caplog.text and dash.token not in caplog.text


def test_binding_beyond_loopback_needs_the_flag():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert bind_problem("127.0.0.1", False) is None
    assert "--allow-remote" in bind_problem("0.0.0.0", False)
    assert bind_problem("0.0.0.0", True) is None


def test_serve_refuses_a_public_host_without_the_flag(capsys, monkeypatch):
    from bot.cli import main
    monkeypatch.delenv("CAVEAT_WEB_SECRET", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--rules-only"]) == 2
    assert "--allow-remote" in capsys.readouterr().err
