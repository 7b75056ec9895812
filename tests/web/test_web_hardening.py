"""Dashboard hardening: no 500 from oversized numbers in URLs, no open redirect after login, failed logins limited
per client address and audited (never the token), and no threshold saved outside the policy's bounds."""
from __future__ import annotations

import asyncio
import logging
import re
from types import SimpleNamespace

import pytest
import yaml

from bot.web.auth import LOGIN_FAILURES, LOGIN_WINDOW_SECONDS, LoginThrottle, client_key, safe_target
from bot.web.keys import AUTH

from bot.web.sandbox import post_to_sandbox

from web_helpers import RISKY, SELLER, csrf_in, login

HUGE = "9" * 25            # past SQLite's 2**63-1: int() works, the query would raise OverflowError


# -- numbers in URLs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [
    f"/audit?offset={HUGE}", "/audit?offset=-1", "/audit?offset=1e3", f"/audit?case={HUGE}",
    "/audit?case=9223372036854775808", "/audit?case=%C2%B2", f"/audit.csv?case={HUGE}", "/audit.csv?case=%C2%B2",
])
async def test_bad_numbers_in_audit_urls_are_a_400_that_says_what_is_allowed(client, path):
    response = await client.get(path)
    assert response.status == 400, path
    text = await response.text()
    assert "must be a whole number from 0 to" in text and "Traceback" not in text


async def test_the_audit_case_filter_takes_a_case_number_as_moderators_type_it(client, dash):
    first = await post_to_sandbox(dash.pipeline, "s1", RISKY)
    second = await post_to_sandbox(dash.pipeline, "s2", SELLER)
    for query in (f"case=%23{first.case_id}", f"case=+{first.case_id}+", f"case={first.case_id}&offset=0"):
        html = await (await client.get(f"/audit?{query}")).text()
        assert f'href="/case/{first.case_id}"' in html and f'href="/case/{second.case_id}"' not in html, query
    assert (await client.get("/audit.csv?case=9223372036854775807")).status == 200   # the largest id SQLite holds
    assert (await client.get("/audit?offset=&case=")).status == 200


# -- open redirect after login --------------------------------------------------------------------------------
# Targets the old check (starts with "/", not with "//") let through; a browser reads each as another site or
# as a path it must not be sent to.
EVIL = ["/\t/evil.example", "/\n/evil.example", "/\r\n/evil.example", "/\\evil.example", "/\\/evil.example",
        "/%2F/evil.example", "/%2f%2fevil.example", "/%5Cevil.example", "/%09/evil.example", "/\x00/evil.example",
        "/queue\x0b", "/é"]
ALREADY_REFUSED = ["//evil.example", "///evil.example", "https://evil.example/", "javascript:alert(1)",
                   "evil.example", " //evil.example", ""]


@pytest.mark.parametrize("target", EVIL)
async def test_login_never_redirects_off_site(anon, dash, target):
    page = await anon.get("/login")
    response = await anon.post("/login", allow_redirects=False, data={
        "csrf": csrf_in(await page.text()), "name": "alice", "token": dash.token, "next": target})
    assert response.status == 303
    assert response.headers["Location"] == "/queue"


async def test_the_reported_link_lands_on_the_queue_and_local_pages_still_work(anon, dash):
    # /login?next=/%09/evil.example used to land on //evil.example (browsers drop the tab)
    page = await anon.get("/login?next=/%09/evil.example")
    html = await page.text()
    shown = re.search(r'name="next" value="([^"]*)"', html).group(1)
    assert shown == "/queue"
    response = await anon.post("/login", allow_redirects=False,
                               data={"csrf": csrf_in(html), "name": "alice", "token": dash.token, "next": shown})
    assert response.headers["Location"] == "/queue"
    page = await anon.get("/login?next=%2Faudit%3Factor%3Dbob%26action%3Dweb_login")
    html = await page.text()
    response = await anon.post("/login", allow_redirects=False, data={
        "csrf": csrf_in(html), "name": "alice", "token": dash.token,
        "next": re.search(r'name="next" value="([^"]*)"', html).group(1).replace("&amp;", "&")})
    assert response.headers["Location"] == "/audit?actor=bob&action=web_login"


def test_safe_target_normalises_before_checking():
    assert safe_target("/que\tue") == "/queue"
    assert safe_target("/audit\\x") == "/audit/x"
    assert safe_target(None) == "/queue" and safe_target("/" + "a" * 3000) == "/queue"
    for good in ("/audit?actor=bob&action=web_login", "/case/3", "/stats", "/thresholds?mode=model", "/"):
        assert safe_target(good) == good
    for bad in EVIL + ALREADY_REFUSED:
        assert safe_target(bad, "/") == "/", bad


# -- failed logins --------------------------------------------------------------------------------------------
async def _link_attempt(client, token: str):
    page = await client.get(f"/login/link/{token}")
    return await client.post(f"/login/link/{token}", data={"csrf": csrf_in(await page.text())},
                             allow_redirects=False)


async def test_failed_logins_are_limited_per_address_then_refused_with_retry_after(anon, dash, caplog):
    caplog.set_level(logging.INFO)
    for i in range(LOGIN_FAILURES):
        response = await login(anon, f"guess-{i}-SECRETISH")
        assert response.status == 401
    locked = await login(anon, dash.token)          # even the right token waits now
    assert locked.status == 429
    assert 0 < int(locked.headers["Retry-After"]) <= LOGIN_WINDOW_SECONDS
    assert "Too many failed logins" in await locked.text()
    assert (await anon.get("/queue")).status == 401
    rows = [r for r in await dash.store.audit_log(community="") if r["action"] == "web_login_failed"]
    assert len(rows) == LOGIN_FAILURES
    assert all(r["detail"]["ip"] == "127.0.0.1" and r["detail"]["via"] == "token" for r in rows)
    logged = " ".join(r.getMessage() for r in caplog.records) + repr([r["detail"] for r in rows])
    assert "failed dashboard login from 127.0.0.1" in logged
    assert "SECRETISH" not in logged and dash.token not in logged


async def test_failed_link_uses_count_too_and_a_locked_client_spends_no_link(anon, dash):
    for i in range(LOGIN_FAILURES):
        assert (await _link_attempt(anon, f"not-a-link-{i}")).status == 401
    good = await dash.store.create_login_link("111", "900000000000000111", "mina")
    locked = await _link_attempt(anon, good)
    assert locked.status == 429 and "Retry-After" in locked.headers
    rows = [r for r in await dash.store.audit_log(community="") if r["action"] == "web_login_failed"]
    assert len(rows) == LOGIN_FAILURES and {r["detail"]["via"] for r in rows} == {"link"}
    assert all("not-a-link" not in repr(r) for r in rows)
    # Once the window has passed the same link still works: the refusal did not spend it.
    clock = [0.0]
    dash.app[AUTH].throttle = LoginThrottle(clock=lambda: clock[0])
    assert (await _link_attempt(anon, good)).status == 303


async def test_parallel_guesses_cannot_slip_past_the_limit(anon, dash):
    page = await anon.get("/login")
    csrf = csrf_in(await page.text())

    async def guess(i):
        response = await anon.post("/login", data={"csrf": csrf, "name": "eve", "token": f"guess-{i}"})
        return response.status

    statuses = await asyncio.gather(*(guess(i) for i in range(4 * LOGIN_FAILURES)))
    assert statuses.count(401) == LOGIN_FAILURES and statuses.count(429) == 3 * LOGIN_FAILURES


async def test_the_lockout_ends_after_the_window(anon, dash):
    clock = [1000.0]
    dash.app[AUTH].throttle = LoginThrottle(clock=lambda: clock[0])
    for i in range(LOGIN_FAILURES):
        await login(anon, f"wrong-{i}")
    assert (await login(anon, dash.token)).status == 429
    clock[0] += LOGIN_WINDOW_SECONDS + 1
    response = await login(anon, dash.token)
    assert response.status == 200 and response.url.path == "/queue"


def test_the_throttle_counts_each_address_on_its_own():
    clock = [0.0]
    t = LoginThrottle(limit=2, window=60, clock=lambda: clock[0])
    t.failed("a")
    clock[0] = 10
    t.failed("a")
    assert t.retry_after("a") == 50 and t.retry_after("b") == 0
    clock[0] = 61
    assert t.retry_after("a") == 0  # the first failure aged out
    v6 = [client_key(SimpleNamespace(remote=ip)) for ip in ("2001:db8::1", "2001:db8::ffff:2", "2001:db8:0:1::1")]
    assert v6[0] == v6[1] != v6[2]  # one /64, one client
    assert client_key(SimpleNamespace(remote="::ffff:10.0.0.1")) == "10.0.0.1"


# -- threshold bounds -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["rules_only", "model"])
async def test_saving_an_emergency_threshold_that_turns_the_lane_off_is_refused(client, dash, mode):
    path = dash.policy_dir / "thresholds.yaml"
    before = path.read_text()
    version = dash.pipeline.policy.version
    html = await (await client.get(f"/thresholds?mode={mode}")).text()
    response = await client.post("/thresholds", data={"csrf": csrf_in(html), "mode": mode, "op": "save",
                                                      "t.emergency.escalate": "1.0", "t.emergency.queue": "1.0"})
    assert response.status == 400
    text = await response.text()
    assert "emergency escalate: 1 is above the maximum 0.8" in text
    assert "emergency queue: 1 is above the maximum 0.5" in text
    assert path.read_text() == before and dash.pipeline.policy.version == version
    assert not [r for r in await dash.store.audit_log(community="sandbox") if r["action"] == "thresholds_saved"]


async def test_a_public_note_threshold_below_the_policy_minimum_is_refused(client, dash):
    before = (dash.policy_dir / "thresholds.yaml").read_text()
    html = await (await client.get("/thresholds")).text()
    response = await client.post("/thresholds", data={"csrf": csrf_in(html), "mode": "rules_only", "op": "save",
                                                      "t.promotion.note": "0.45"})
    assert response.status == 400
    assert "promotion note: 0.45 is below the minimum 0.5" in await response.text()
    assert (dash.policy_dir / "thresholds.yaml").read_text() == before


async def test_a_threshold_at_the_bound_is_saved_and_the_page_shows_the_bounds(client, dash):
    html = await (await client.get("/thresholds?mode=rules_only")).text()
    assert "allowed 0.2–0.8" in html and "allowed 0.01–0.5" in html
    # Any value can still be simulated; only saving is bounded.
    sim = await client.get("/thresholds/simulate?mode=rules_only&t.emergency.escalate=0.95&t.emergency.queue=0.9")
    assert sim.status == 200
    response = await client.post("/thresholds", data={"csrf": csrf_in(html), "mode": "rules_only", "op": "save",
                                                      "t.emergency.escalate": "0.8"})
    assert response.status == 200 and "Saved and reloaded" in await response.text()
    saved = yaml.safe_load((dash.policy_dir / "thresholds.yaml").read_text())["thresholds"]["rules_only"]
    assert saved["emergency"]["escalate"]["value"] == 0.8
