"""Browser tests: headless Debian chromium drives the dashboard as a moderator would; screenshots each page."""
from __future__ import annotations

from bot.web.queries import SANDBOX

from bot.web.sandbox import post_to_sandbox, seed

from web_helpers import BORDERLINE, CRISIS, RISKY, shot


async def _send(page, text, name="mira"):
    await page.fill("#member", name)
    await page.fill("#text", text)
    before = await page.locator("#feed > li.msg").count()
    await page.click("#send")
    await page.locator("#feed > li.msg").nth(before).wait_for()
    return page.locator("#feed > li.msg").last


async def test_risky_post_in_the_sandbox_gets_a_note_with_sources(page, dash):
    await page.goto("/sandbox")
    msg = await _send(page, RISKY)
    note = dash.pipeline.policy.notes["rapa-wounds"]
    card = msg.locator(".card.note")
    await card.wait_for()
    assert await card.locator(".note-title").inner_text() == note.title
    links = card.locator("ol.sources li a")
    assert await links.count() == 3
    assert (await links.first.get_attribute("href")).startswith("https://")
    assert "case #" in await msg.locator(".chip.queued").inner_text()
    crisis = await _send(page, CRISIS, name="jo")
    assert "988" in await crisis.locator(".card.crisis").inner_text()
    await shot(page, "sandbox")


async def test_borderline_post_is_queued_claimed_dismissed_and_audited(page):
    await page.goto("/sandbox")
    msg = await _send(page, BORDERLINE, name="sam")
    assert "moderators' queue" in await msg.locator(".chip.queued").inner_text()
    assert await msg.locator(".card.note").count() == 0

    await page.goto("/queue")
    row = page.locator("#queue tbody tr", has_text="sertraline")
    assert "stop-meds" in await row.inner_text()
    await shot(page, "queue")
    await page.keyboard.press("j")           # select the first case
    await page.keyboard.press("Enter")       # open it
    await page.wait_for_url("**/case/*")
    await page.keyboard.press("c")           # claim
    await page.locator("#case-status", has_text="claimed").wait_for()
    await page.keyboard.press("d")           # focus the dismiss reason
    await page.select_option("#reason-dismiss", "false_positive")
    await page.click("#dismiss")
    await page.locator("#case-status", has_text="dismissed").wait_for()
    await shot(page, "case")

    await page.click("text=Audit log")
    table = page.locator("#audit")
    assert await table.locator('tr[data-action="claim"]').count() == 1
    dismissed = table.locator('tr[data-action="dismissed"]')
    assert "false_positive" in await dismissed.inner_text() and "alice" in await dismissed.inner_text()
    await shot(page, "audit")
    await page.click("text=Stats")
    assert "stop-meds" in await page.locator("#rules").inner_text()
    await shot(page, "stats")


async def test_thresholds_page_changes_the_simulated_counts(page, dash):
    outcomes = []
    for name, text in (("s1", RISKY), ("s2", BORDERLINE), ("s3", BORDERLINE)):
        outcomes.append(await post_to_sandbox(dash.pipeline, name, text))
    # Moderators judged them: the note was right, one borderline post was removed, the other dismissed.
    for outcome, resolution in zip(outcomes, ("sent_note", "removed", "dismissed")):
        await dash.store.resolve(outcome.case_id, "bob", resolution, community=SANDBOX, reason_code="other")
    await page.goto("/thresholds")
    row = page.locator('tr[data-key="risky_self_treatment.note"]')

    def field(r, name):
        return r.locator(f'[data-field="{name}"]').inner_text()
    assert (await field(row, "produced"), await field(row, "precision"), await field(row, "recall")) == ("1", "1.00", "0.50")
    await page.fill('input[name="t.risky_self_treatment.note"]', "0.45")
    await page.locator('#thresholds-form[data-simulated="1"]').wait_for()
    assert (await field(row, "produced"), await field(row, "precision"), await field(row, "recall")) == ("3", "0.67", "1.00")
    queue_row = page.locator('tr[data-key="risky_self_treatment.queue"]')
    assert await field(queue_row, "produced") == "0"
    assert await page.locator('input[aria-label="risky_self_treatment.note slider"]').input_value() == "0.45"
    await shot(page, "thresholds")


async def test_seeded_dashboard_shows_a_full_queue_and_stats(page, dash):
    await seed(dash.pipeline)
    await page.goto("/queue")
    rows = page.locator("#queue tbody tr")
    assert await rows.count() >= 4
    assert "emergency" in await rows.first.inner_text()   # most severe first
    await shot(page, "queue-seeded")
    await page.goto("/sandbox")
    assert await page.locator(".card.note").count() >= 2
    await shot(page, "sandbox-seeded")
    await page.goto("/stats")
    assert await page.locator("svg.chart rect").count() >= 3
    await shot(page, "stats-seeded")


async def test_browser_without_login_or_csrf_is_refused(browser, server, dash):
    context = await browser.new_context(viewport={"width": 1280, "height": 700}, base_url=str(server.make_url("/")))
    page = await context.new_page()
    await page.goto("/queue")
    assert "/login" in page.url
    await shot(page, "login")
    response = await page.request.get("/audit.csv")
    assert response.status == 401
    await page.fill('input[name="name"]', "alice")
    await page.fill('input[name="token"]', dash.token)
    await page.click('button[type="submit"]')
    await page.wait_for_url("**/queue")
    response = await page.request.post("/sandbox/post", form={"name": "eve", "text": RISKY})
    assert response.status == 403 and "CSRF" in await response.text()
    assert await dash.store.count_cases(community=SANDBOX) == 0
    await context.close()
