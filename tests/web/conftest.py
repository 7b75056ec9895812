"""Fixtures for the dashboard: an app on a temporary database and policy copy, a logged-in client, a browser."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.pipeline import Pipeline
from bot.web.app import build_app
from bot.web.auth import ensure_token
from policies.loader import load_policy
from web_helpers import BORDERLINE, CRISIS, RISKY, SAFE, SELLER, csrf_in, link_login, login, shot  # noqa: F401

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]

@dataclass
class Dash:
    """A running dashboard for one test: its services, login token and policy directory."""

    app: object
    store: object
    pipeline: Pipeline
    token: str
    policy_dir: Path


@pytest.fixture
async def dash(store, policy_dir) -> Dash:
    """The dashboard app on a fresh database and a tmp copy of the policy (rules only)."""
    pipeline = Pipeline(store, load_policy(policy_dir), scorer=None)
    token = await ensure_token(store)
    return Dash(build_app(store, pipeline, str(policy_dir)), store, pipeline, token, policy_dir)


@pytest.fixture
async def anon(dash):
    """An HTTP client with no session."""
    client = TestClient(TestServer(dash.app))
    await client.start_server()
    yield client
    await client.close()


@pytest.fixture
async def client(anon, dash):
    """An HTTP client logged in as moderator 'alice'."""
    response = await login(anon, dash.token)
    assert response.status == 200 and response.url.path == "/queue"
    return anon


@pytest.fixture
async def server(dash):
    """The dashboard listening on a free loopback port, for the browser."""
    srv = TestServer(dash.app, host="127.0.0.1")
    await srv.start_server()
    yield srv
    await srv.close()


@pytest.fixture
async def browser():
    """Headless Debian chromium driven by playwright (never downloads a browser)."""
    from playwright.async_api import async_playwright
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        yield b
        await b.close()


@pytest.fixture
async def page(browser, server, dash):
    """A browser page logged in as 'alice', with the base URL at page.base."""
    context = await browser.new_context(viewport={"width": 1280, "height": 860}, base_url=str(server.make_url("/")))
    pg = await context.new_page()
    await pg.goto("/login")
    await pg.fill('input[name="name"]', "alice")
    await pg.fill('input[name="token"]', dash.token)
    await pg.click('button[type="submit"]')
    await pg.wait_for_url("**/queue")
    yield pg
    await context.close()


@pytest.fixture
async def moderator(dash):
    """Make moderators logged in by one-time links: `await moderator("111", "9001", "mina")` returns a client
    whose session shows community 111 only (clients are closed after the test)."""
    clients = []

    async def make(community: str, moderator_id: str, name: str = "mod") -> TestClient:
        c = TestClient(TestServer(dash.app))
        await c.start_server()
        clients.append(c)
        response = await link_login(c, dash.store, community, moderator_id, name)
        assert response.status == 200 and response.url.path == "/queue", await response.text()
        return c

    yield make
    for c in clients:
        await c.close()
