"""One community per dashboard session: a moderator logged in by a one-time link sees only their server's
cases, audit, stats, sandbox and simulation; an operator sees one community at a time and switches; case
actions on Discord posts go to the outbox for the bot; replayed history is kept out of the queue."""
from __future__ import annotations

import csv
import io
import re

import pytest

from bot.community import update_config
from bot.engine import Post
from bot.web.sandbox import post_to_sandbox
from policies.loader import DEFAULT_POLICY_DIR

from web_helpers import CRISIS, RISKY, SELLER, csrf_in, shot

QUEUED = "I am going to stop my meds cold turkey"
MOD = {"111": "900000000000000111", "222": "900000000000000222"}   # Discord ids of one moderator per server

# Each community's posts, authors and channel names are distinctive, so a leak shows up as text on a page.
SPEC = {
    "111": {"channel": ("c-111", "recovery-lounge"), "author": ("u-111", "lounge_mira"),
            "posts": (QUEUED, RISKY), "sandbox": ("lounge_sam", "My dermatologist says rapamycin cream is fine")},
    "222": {"channel": ("c-222", "night-owls"), "author": ("u-222", "owl_kai"),
            "posts": (CRISIS, SELLER, "Good evening owls, anyone awake?"),
            "sandbox": ("owl_zed", "rapamycin cures baldness, my hairline came back in a month")},
}


def _markers(community: str) -> list[str]:
    """Text only this community's data can put on a page."""
    spec = SPEC[community]
    return [*spec["posts"], spec["sandbox"][1], spec["author"][1], spec["channel"][1], spec["sandbox"][0],
            MOD[community]]


def _discord(community: str, message_id: str, text: str, *, author=None, channel=None) -> Post:
    spec = SPEC.get(community, SPEC["111"])
    author_id, author_name = author or spec["author"]
    channel_id, channel_name = channel or spec["channel"]
    return Post("discord", message_id, channel_id, author_id, text, community_id=community, author_name=author_name,
                channel_name=channel_name)


async def _populate(dash) -> dict:
    """Both communities' Discord posts (shadow mode, as new servers start) and a sandbox post each."""
    seen = {}
    for community, spec in SPEC.items():
        cases, posts, rules = [], [], set()
        outcomes = [await dash.pipeline.handle(_discord(community, f"{community}-{n}", text))
                    for n, text in enumerate(spec["posts"])]
        outcomes.append(await post_to_sandbox(dash.pipeline, *spec["sandbox"], community=community))
        for out in outcomes:
            posts.append(out.post_id)
            if out.case_id:
                cases.append(out.case_id)
            rules |= {h["rule"] for h in out.decision.to_dict()["rules"] if h.get("weight") and not h.get("suppressed_by")}
        seen[community] = {"cases": cases, "posts": posts, "rules": rules, "decisions": len(outcomes)}
    assert len(seen["222"]["cases"]) >= 2 and len(seen["111"]["cases"]) >= 2
    return seen


def _assert_none_of(body: str, seen: dict, community: str, where: str) -> None:
    """Nothing of `community` in a page: no text, author, channel, moderator id, case link or case row."""
    for marker in _markers(community):
        assert marker not in body, f"{where} shows {marker!r} of community {community}"
    for case_id in seen[community]["cases"]:
        assert f'href="/case/{case_id}"' not in body, f"{where} links case #{case_id} of community {community}"
        assert f'data-case="{case_id}"' not in body, f"{where} lists case #{case_id} of community {community}"


def _rules_table(stats_html: str) -> str:
    return stats_html.split('id="rules"', 1)[1].split("</table>", 1)[0]


async def _csrf(client, path="/queue") -> str:
    return csrf_in(await (await client.get(path)).text())


async def _act(client, case_id, action, **form):
    html = await (await client.get(f"/case/{case_id}")).text()
    return await client.post(f"/case/{case_id}/{action}", data={"csrf": csrf_in(html), **form})


async def _check_sees_only(client, seen: dict, mine: str, theirs: str) -> None:
    """Every page of a session bound to `mine` shows its data and nothing of `theirs`."""
    queue = await (await client.get("/queue")).text()
    for text in SPEC[mine]["posts"]:
        if text != SPEC["222"]["posts"][2]:   # the benign evening greeting opens no case
            assert text in queue
    for case_id in seen[mine]["cases"]:
        assert f'data-case="{case_id}"' in queue
    assert f"#{SPEC[mine]['channel'][1]}" in queue
    _assert_none_of(queue, seen, theirs, "/queue")
    _assert_none_of(await (await client.get("/queue?status=all&replayed=1")).text(), seen, theirs, "/queue?status=all")

    for case_id in seen[theirs]["cases"]:
        response = await client.get(f"/case/{case_id}")
        assert response.status == 404
        _assert_none_of(await response.text(), seen, theirs, f"/case/{case_id}")
    own = await client.get(f"/case/{seen[mine]['cases'][0]}")
    assert own.status == 200
    _assert_none_of(await own.text(), seen, theirs, "own case page")

    audit = await (await client.get("/audit")).text()
    assert 'data-action="case_opened"' in audit and f'href="/case/{seen[mine]["cases"][0]}"' in audit
    _assert_none_of(audit, seen, theirs, "/audit")

    exported = await (await client.get("/audit.csv")).text()
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert {int(r["case_id"]) for r in rows if r["case_id"]} == set(seen[mine]["cases"])
    assert {int(r["post_id"]) for r in rows if r["post_id"]} == set(seen[mine]["posts"])
    for marker in _markers(theirs):
        assert marker not in exported

    stats = await (await client.get("/stats")).text()
    _assert_none_of(stats, seen, theirs, "/stats")
    table = _rules_table(stats)
    for rule in seen[mine]["rules"]:
        assert rule in table
    for rule in seen[theirs]["rules"] - seen[mine]["rules"]:
        assert rule not in table, f"/stats counts rule {rule} that fired only in community {theirs}"

    sandbox = await (await client.get("/sandbox")).text()
    assert SPEC[mine]["sandbox"][1] in sandbox
    _assert_none_of(sandbox, seen, theirs, "/sandbox")

    sim = await (await client.get("/thresholds/simulate?mode=rules_only")).json()
    assert sim["decisions"] == seen[mine]["decisions"]
    emergency = sum(r["produced"] for r in sim["labels"]["emergency"].values())
    assert emergency == (1 if mine == "222" else 0)
    _assert_none_of(await (await client.get("/thresholds")).text(), seen, theirs, "/thresholds")


@pytest.mark.parametrize("mine, theirs", [("111", "222"), ("222", "111")])
async def test_a_moderator_sees_only_their_own_community(dash, moderator, mine, theirs):
    seen = await _populate(dash)
    client = await moderator(mine, MOD[mine], f"mod{mine}")
    header = await (await client.get("/queue")).text()
    assert f'<span class="community" id="community">server {mine}</span>' in header
    assert '<select name="community"' not in header   # no picker for moderators
    await _check_sees_only(client, seen, mine, theirs)


async def test_a_moderators_sandbox_posts_stay_in_their_community(dash, moderator):
    seen = await _populate(dash)
    mina = await moderator("111", MOD["111"], "mina")
    kai = await moderator("222", MOD["222"], "kai")
    text = "Put the rapa cream on my fresh stitches from yesterday"
    response = await mina.post("/sandbox/post", data={"csrf": await _csrf(mina, "/sandbox"), "name": "tester",
                                                      "text": text}, headers={"Accept": "application/json"})
    data = await response.json()
    assert response.status == 200 and data["case_id"]
    post = await dash.store.post(data["post_id"], community="111")
    assert (post["platform"], post["community_id"]) == ("sandbox", "111")
    assert text in await (await mina.get("/sandbox")).text()
    assert f'data-case="{data["case_id"]}"' in await (await mina.get("/queue")).text()
    assert text not in await (await kai.get("/sandbox")).text()
    assert f'data-case="{data["case_id"]}"' not in await (await kai.get("/queue")).text()
    assert (await kai.get(f"/case/{data['case_id']}")).status == 404
    assert await dash.store.count_cases(community="222") == len(seen["222"]["cases"])   # 222 untouched


async def test_an_operator_switches_between_communities(dash, client):
    seen = await _populate(dash)
    html = await (await client.get("/queue")).text()
    options = re.findall(r"<option[^>]*>([^<]+)</option>",
                         html.split('id="community"', 1)[1].split("</select>", 1)[0])
    assert set(options) >= {"111", "222", "sandbox"}
    _assert_none_of(html, seen, "111", "operator's sandbox queue")
    _assert_none_of(html, seen, "222", "operator's sandbox queue")
    for mine, theirs in (("111", "222"), ("222", "111")):
        response = await client.post("/community", data={"csrf": csrf_in(html), "community": mine})
        assert response.status == 200 and response.url.path == "/queue"
        html = await response.text()
        assert re.search(rf"<option selected>{mine}</option>", html)
        await _check_sees_only(client, seen, mine, theirs)
    response = await client.post("/community", data={"csrf": csrf_in(html), "community": "333"})
    assert response.status == 400 and "unknown community" in await response.text()
    # still on 222
    assert SPEC["222"]["posts"][0] in await (await client.get("/queue")).text()


# -- case actions on Discord posts: the dashboard asks, the bot carries out ------------------------------
async def test_send_note_on_a_discord_case_is_queued_for_the_bot(dash, moderator):
    risky = await dash.pipeline.handle(_discord("111", "d-risky", RISKY))   # shadow mode: the note was withheld
    assert risky.case_id and risky.reply is None and risky.note_blocked == "shadow mode"
    mina = await moderator("111", MOD["111"], "mina")

    claimed = await _act(mina, risky.case_id, "claim")
    assert claimed.status == 200
    assert f'id="case-status">claimed · {MOD["111"]}' in await claimed.text()

    sent = await _act(mina, risky.case_id, "send_note")
    html = await sent.text()
    assert sent.status == 200 and sent.url.query.get("done") == "send_note"
    assert 'id="case-status">sent_note' in html
    assert "<h2>Waiting for discord</h2>" in html
    pending = html.split('id="pending">', 1)[1].split("</ul>", 1)[0]
    assert "post note" in pending
    case = await dash.store.case(risky.case_id, community="111")
    assert (case["status"], case["resolution"], case["resolved_by"]) == ("resolved", "sent_note", MOD["111"])
    # Nothing was posted yet: the note is reserved, without a Discord message id until the bot posts it.
    assert await dash.store.replies(risky.post_id) == {"note": None}

    actions = await dash.store.take_actions("discord")
    kinds = sorted(a["kind"] for a in actions)
    assert kinds.count("post_note") == 1 and set(kinds) == {"post_note", "refresh_card"}
    note = next(a for a in actions if a["kind"] == "post_note")
    assert note["detail"]["note_id"] == "rapa-wounds" == dash.pipeline.policy.notes["rapa-wounds"].id
    assert (note["case_id"], note["post_id"], note["community_id"], note["actor"]) == (
        risky.case_id, risky.post_id, "111", MOD["111"])
    assert await dash.store.take_actions("sandbox") == []
    audit = [r["action"] for r in await dash.store.audit_log(community="111", case_id=risky.case_id)]
    assert {"claim", "note_requested", "sent_note"} <= set(audit)


async def test_remove_on_a_discord_case_queues_the_deletion(dash, moderator):
    seller = await dash.pipeline.handle(_discord("111", "d-seller", SELLER))
    assert seller.case_id
    mina = await moderator("111", MOD["111"], "mina")
    no_reason = await _act(mina, seller.case_id, "remove")
    assert no_reason.status == 400 and "choose a reason" in await no_reason.text()
    removed = await _act(mina, seller.case_id, "remove", reason="seller")
    html = await removed.text()
    assert removed.status == 200 and 'id="case-status">removed' in html
    assert "delete post" in html.split('id="pending">', 1)[1].split("</ul>", 1)[0]
    actions = await dash.store.take_actions("discord")
    assert sorted(a["kind"] for a in actions) == ["delete_post", "refresh_card"]
    delete = next(a for a in actions if a["kind"] == "delete_post")
    assert (delete["post_id"], delete["detail"]["reason_code"], delete["actor"]) == (seller.post_id, "seller", MOD["111"])
    # The dashboard cannot delete a Discord post itself: the text stays until the bot deletes it.
    assert (await dash.store.post(seller.post_id, community="111"))["text"] == SELLER


async def test_another_communitys_moderator_gets_404_for_a_discord_case(dash, moderator):
    risky = await dash.pipeline.handle(_discord("111", "d-risky", RISKY))
    kai = await moderator("222", MOD["222"], "kai")
    page = await kai.get(f"/case/{risky.case_id}")
    assert page.status == 404 and RISKY not in await page.text()
    csrf = await _csrf(kai)
    for action, form in (("claim", {}), ("send_note", {}), ("remove", {"reason": "seller"}),
                         ("dismiss", {"reason": "false_positive"}), ("dismiss", {}), ("escalate", {})):
        response = await kai.post(f"/case/{risky.case_id}/{action}", data={"csrf": csrf, **form})
        assert response.status == 404, (action, form, response.status)
        assert RISKY not in await response.text()
    case = await dash.store.case(risky.case_id, community="111")
    assert (case["status"], case["claimed_by"]) == ("open", None)
    assert await dash.store.take_actions("discord") == []


async def test_a_note_already_posted_automatically_cannot_be_sent_again(dash, moderator):
    await update_config(dash.store, dash.pipeline.policy, "111", "owner", {"shadow_mode": "live"})
    risky = await dash.pipeline.handle(_discord("111", "d-live", RISKY))
    assert risky.reply == "note" and risky.case_id     # the bot posts it; the case stays for review
    mina = await moderator("111", MOD["111"], "mina")
    html = await (await mina.get(f"/case/{risky.case_id}")).text()
    assert re.search(r'<button id="send-note" type="submit" disabled title="a note was already sent"', html)
    refused = await _act(mina, risky.case_id, "send_note")
    assert refused.status == 409 and "a note was already sent" in await refused.text()
    assert (await dash.store.case(risky.case_id, community="111"))["status"] == "open"
    assert [a for a in await dash.store.take_actions("discord") if a["kind"] == "post_note"] == []


# -- replayed history -------------------------------------------------------------------------------------
async def test_replayed_cases_are_hidden_marked_and_cleared_in_the_browser(dash, moderator, browser, server):
    old = ("u-old", "old_timer")
    replayed = [await dash.pipeline.handle(_discord("111", f"r-{n}", text, author=old,
                                                    channel=("c-archive", "archive")), replayed=True)
                for n, text in enumerate((RISKY, SELLER))]
    assert all(r.case_id and r.reply is None for r in replayed)
    live = await dash.pipeline.handle(_discord("111", "live-1", QUEUED))
    assert live.case_id

    mina = await moderator("111", MOD["111"], "mina")
    queue = await (await mina.get("/queue")).text()
    assert QUEUED in queue and RISKY not in queue and SELLER not in queue
    assert 'id="clear-replayed"' in queue
    shown = await (await mina.get("/queue?replayed=1")).text()
    assert RISKY in shown and SELLER in shown and QUEUED in shown
    for r in replayed:
        assert f'data-case="{r.case_id}"' in shown
        html = await (await mina.get(f"/case/{r.case_id}")).text()
        assert '<span class="chip" id="replayed">replayed history</span>' in html
        assert re.search(r'<button id="send-note" type="submit" disabled title="replayed history: nothing is posted"',
                         html)
    refused = await _act(mina, replayed[0].case_id, "send_note")
    assert refused.status == 409 and "replayed history" in await refused.text()

    token = await dash.store.create_login_link("111", MOD["111"], "mina")
    context = await browser.new_context(viewport={"width": 1280, "height": 860}, base_url=str(server.make_url("/")))
    try:
        pg = await context.new_page()
        await pg.goto(f"/login/link/{token}")
        await pg.click('form[action^="/login/link/"] button[type="submit"]')
        await pg.wait_for_url("**/queue")
        assert await pg.locator("#queue tbody tr").count() == 1
        await pg.goto("/queue?replayed=1")
        assert await pg.locator("#queue tbody tr").count() == 3
        assert await pg.locator("#clear-replayed").count() == 1
        await shot(pg, "queue-replayed")
        await pg.click("#clear-replayed")
        await pg.wait_for_url("**/queue")
        assert await pg.locator("#clear-replayed").count() == 0
        await pg.goto("/queue?replayed=1")
        assert await pg.locator("#clear-replayed").count() == 0
        rows = pg.locator("#queue tbody tr")
        assert await rows.count() == 1 and QUEUED in await rows.first.inner_text()
        await shot(pg, "queue-replayed-cleared")
    finally:
        await context.close()
    for r in replayed:
        case = await dash.store.case(r.case_id, community="111")
        assert (case["status"], case["resolution"], case["resolved_by"]) == ("resolved", "cleared", MOD["111"])
    assert (await dash.store.case(live.case_id, community="111"))["status"] == "open"
    assert await dash.store.take_actions("discord") == []


# -- thresholds -------------------------------------------------------------------------------------------
async def test_a_moderator_cannot_save_thresholds_but_the_operator_can(dash, moderator, client):
    before = (dash.policy_dir / "thresholds.yaml").read_text()
    version = dash.pipeline.policy.version
    mina = await moderator("111", MOD["111"], "mina")
    page = await mina.get("/thresholds")
    assert page.status == 200
    form = {"csrf": csrf_in(await page.text()), "mode": "rules_only", "op": "save", "t.promotion.note": "0.6"}
    refused = await mina.post("/thresholds", data=form)
    assert refused.status == 403
    assert "only the bot&#39;s operator can save thresholds" in await refused.text()
    assert (dash.policy_dir / "thresholds.yaml").read_text() == before
    assert dash.pipeline.policy.version == version
    assert not [r for r in await dash.store.audit_log(community="111") if r["action"] == "thresholds_saved"]
    # Simulating is still allowed to a moderator.
    simulated = await mina.post("/thresholds", data={**form, "op": "simulate"})
    assert simulated.status == 200

    html = await (await client.get("/thresholds")).text()
    saved = await client.post("/thresholds", data={**form, "csrf": csrf_in(html)})
    assert saved.status == 200 and "Saved and reloaded" in await saved.text()
    assert dash.pipeline.policy.threshold("rules_only", "promotion", "note").value == 0.6
    assert (DEFAULT_POLICY_DIR / "thresholds.yaml").read_text() != (dash.policy_dir / "thresholds.yaml").read_text()


async def test_the_queue_pager_keeps_replayed_history_on_the_next_page(dash, moderator):
    # 55 replayed posts: /queue?replayed=1 shows 50 and links the next page, which must show the other 5.
    outcomes = [await dash.pipeline.handle(_discord("111", f"p-{n}", f"{QUEUED} (old post {n})"), replayed=True)
                for n in range(55)]
    ids = {o.case_id for o in outcomes}
    assert None not in ids and len(ids) == 55
    mina = await moderator("111", MOD["111"], "mina")
    first = await (await mina.get("/queue?replayed=1")).text()
    on_first = {int(i) for i in re.findall(r'data-case="(\d+)"', first)}
    assert len(on_first) == 50 and on_first < ids
    link = re.search(r'<a href="(\?[^"]*)">next page', first)
    assert link, "no next-page link"
    second = await (await mina.get("/queue" + link.group(1).replace("&amp;", "&"))).text()
    on_second = {int(i) for i in re.findall(r'data-case="(\d+)"', second)}
    assert on_second == ids - on_first, f"the next page of /queue?replayed=1 ({link.group(1)}) lost the replayed filter"


async def test_stats_do_not_count_replayed_history_as_rule_hits(dash, moderator):
    # Replayed history never happened live: the stats leave it out (Store.stats says so), rule hits included.
    for n, text in enumerate((RISKY, SELLER)):
        await dash.pipeline.handle(_discord("111", f"r-{n}", text), replayed=True)
    mina = await moderator("111", MOD["111"], "mina")
    stats = await (await mina.get("/stats")).text()
    assert "no cases yet" in stats and "<span class=\"big\">0</span> open cases" in stats
    table = _rules_table(stats)
    assert "rapa-wound" not in table and "seller" not in table, "/stats counts replayed posts as rule hits"
    assert "No rule has fired yet." in table
