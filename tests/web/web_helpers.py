"""Helpers the dashboard tests import (kept out of conftest.py: `from conftest import ...` is ambiguous when
several test folders, each with a conftest.py, are collected in one run)."""
from __future__ import annotations

import re
from pathlib import Path

from aiohttp.test_utils import TestClient

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"

RISKY = "Put the rapa cream right on the fresh surgical wound, it stops the scar"
BORDERLINE = "I'm thinking of stopping my sertraline cold turkey next week"
SELLER = "DM me, I sell sirolimus"
CRISIS = "I want to kill myself tonight"
SAFE = "Don't put rapamycin on a fresh surgical wound, it slows healing"


def csrf_in(html: str) -> str:
    """The CSRF token embedded in a page's forms."""
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match is not None, "no CSRF token on the page"
    return match.group(1)


async def login(client: TestClient, token: str, name: str = "alice"):
    """Log in through the form (CSRF included); returns the response after the redirect."""
    page = await client.get("/login")
    return await client.post("/login", data={"csrf": csrf_in(await page.text()), "name": name, "token": token,
                                             "next": "/queue"})


async def shot(pg, name: str) -> None:
    """Save a full-page screenshot to test-artifacts/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await pg.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def link_login(client: TestClient, store, community: str, moderator_id: str, name: str = "mod", *,
                     minutes: float = 15):
    """Log in the way `/caveat dashboard` does: a one-time link, its confirm page, then the confirm POST.
    Returns the response after the redirect."""
    token = await store.create_login_link(community, moderator_id, name, minutes=minutes)
    page = await client.get(f"/login/link/{token}")
    return await client.post(f"/login/link/{token}", data={"csrf": csrf_in(await page.text())})
