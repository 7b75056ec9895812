"""The dashboard's pages over HTTP: sandbox replies, queue, case actions and locking, audit, stats, thresholds."""
from __future__ import annotations

from bot.web.queries import SANDBOX

import csv
import io

import yaml
from aiohttp.test_utils import TestClient, TestServer

from bot.web.sandbox import SEED, post_to_sandbox, seed
from policies.loader import DEFAULT_POLICY_DIR, load_policy

from web_helpers import BORDERLINE, CRISIS, RISKY, SAFE, SELLER, csrf_in, login


async def _post(client, text, name="mira"):
    html = await (await client.get("/sandbox")).text()
    response = await client.post("/sandbox/post", data={"csrf": csrf_in(html), "name": name, "text": text},
                                 headers={"Accept": "application/json"})
    return response.status, await response.json()


async def _act(client, case_id, action, **form):
    html = await (await client.get(f"/case/{case_id}")).text()
    return await client.post(f"/case/{case_id}/{action}", data={"csrf": csrf_in(html), **form})


async def test_risky_sandbox_post_gets_the_note_card_with_numbered_sources(client, dash):
    status, data = await _post(client, RISKY)
    assert status == 200 and data["action"] == "note_and_queue" and data["case_id"]
    note = dash.pipeline.policy.notes["rapa-wounds"]
    assert note.title in data["html"] and data["html"].count('<li><a href="http') == 3
    assert await dash.store.replies(data["post_id"]) == {"note": f"sandbox-{data['post_id']}-note"}
    page = await (await client.get("/sandbox")).text()
    assert note.title in page and RISKY in page


async def test_a_source_without_a_year_shows_its_publisher_alone(client, dash):
    status, data = await _post(client, SELLER)
    assert status == 200 and data["action"] == "note_and_queue"
    assert dash.pipeline.policy.notes["buying-online"].title in data["html"]
    assert "US Food and Drug Administration</span>" in data["html"]
    assert "US Food and Drug Administration, </span>" not in data["html"]


async def test_crisis_post_shows_crisis_resources_and_safe_post_does_nothing(client, dash):
    _, crisis = await _post(client, CRISIS, name="jo")
    assert crisis["action"] == "escalate" and "988 Suicide" in crisis["html"]
    _, safe = await _post(client, SAFE, name="ana")
    assert safe["action"] == "none" and safe["case_id"] is None and "No action" in safe["html"]


async def test_second_note_in_cooldown_is_held_back_and_says_why(client):
    await _post(client, RISKY)
    _, again = await _post(client, RISKY + " really")
    assert "Note held back" in again["html"] and "already got a note" in again["html"]


async def test_empty_or_nameless_posts_are_refused_with_a_reason(client, dash):
    status, data = await _post(client, "   ")
    assert status == 400 and "Type a post" in data["error"]
    status, data = await _post(client, SELLER, name="")
    assert status == 400 and "member name" in data["error"]
    assert await dash.store.count_cases(community=SANDBOX) == 0


async def test_queue_filters_by_label_and_status(client):
    await _post(client, RISKY)
    await _post(client, SELLER, name="dan")
    html = await (await client.get("/queue?label=promotion")).text()
    assert "DM me" in html and "rapa cream" not in html
    assert "seller" in html  # rules fired
    assert "No cases match" in await (await client.get("/queue?status=resolved")).text()


async def test_case_page_highlights_spans_and_shows_versions(client, dash):
    _, data = await _post(client, RISKY)
    html = await (await client.get(f"/case/{data['case_id']}")).text()
    assert '<mark class="hit" title="rapa-wound">rapa</mark>' in html
    assert dash.pipeline.policy.version in html and "rules-only" in html
    assert (await client.get("/case/999")).status == 404


async def test_claim_locks_the_case_against_another_moderator(client, dash):
    _, data = await _post(client, BORDERLINE, name="sam")
    case_id = data["case_id"]
    assert (await _act(client, case_id, "claim")).status == 200
    bob = TestClient(TestServer(dash.app))
    await bob.start_server()
    try:
        await login(bob, dash.token, "bob")
        response = await _act(bob, case_id, "dismiss", reason="false_positive")
        assert response.status == 409 and "claimed by operator:alice" in await response.text()
    finally:
        await bob.close()
    assert (await dash.store.case(case_id, community=SANDBOX))["status"] == "claimed"


async def test_dismiss_needs_a_reason_and_is_audited(client, dash):
    _, data = await _post(client, BORDERLINE, name="sam")
    case_id = data["case_id"]
    response = await _act(client, case_id, "dismiss")
    assert response.status == 400 and "choose a reason" in await response.text()
    await _act(client, case_id, "claim")
    response = await _act(client, case_id, "dismiss", reason="false_positive")
    assert response.status == 200 and "Done: dismiss" in await response.text()
    case = await dash.store.case(case_id, community=SANDBOX)
    assert (case["resolution"], case["reason_code"], case["resolved_by"]) == ("dismissed", "false_positive", "operator:alice")
    actions = [r["action"] for r in await dash.store.audit_log(community=SANDBOX, case_id=case_id)]
    assert "claim" in actions and "dismissed" in actions


async def test_send_note_posts_the_proposed_note_into_the_sandbox_once(client, dash):
    _, data = await _post(client, BORDERLINE, name="sam")
    assert (await _act(client, data["case_id"], "send_note")).status == 200
    assert "note" in await dash.store.replies(data["post_id"])
    assert (await dash.store.case(data["case_id"], community=SANDBOX))["resolution"] == "sent_note"
    page = await (await client.get("/sandbox")).text()
    assert "card note" in page


async def test_remove_takes_the_sandbox_post_down(client, dash):
    _, data = await _post(client, SELLER, name="dan")
    assert (await _act(client, data["case_id"], "remove", reason="seller")).status == 200
    assert (await dash.store.post(data["post_id"], community=SANDBOX))["text"] is None
    assert "removed by a moderator" in await (await client.get("/sandbox")).text()


async def test_audit_filters_and_exports_csv(client, dash):
    _, data = await _post(client, BORDERLINE, name="sam")
    await _act(client, data["case_id"], "escalate", reason="dangerous_advice")
    html = await (await client.get("/audit?action=escalated")).text()
    assert "dangerous_advice" in html and "case_opened</td>" not in html
    response = await client.get("/audit.csv")
    assert response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(await response.text())))
    assert {"decision", "case_opened", "escalated"} <= {r["action"] for r in rows}
    assert all(BORDERLINE not in r["detail"] for r in rows)


async def test_stats_show_outcomes_and_flag_a_noisy_rule(client, dash):
    for name in ("a1", "a2"):
        _, data = await _post(client, BORDERLINE, name=name)
        await _act(client, data["case_id"], "dismiss", reason="false_positive")
    html = await (await client.get("/stats")).text()
    assert "stop-meds" in html and "noisy" in html and "dismissed" in html


async def test_seed_fills_an_empty_sandbox_once(dash):
    assert await seed(dash.pipeline) == len(SEED)
    assert await dash.store.count_cases(community=SANDBOX) >= 4
    assert await seed(dash.pipeline) == 0


async def test_threshold_simulation_counts_change_with_the_value(client, dash):
    for name, text in (("s1", BORDERLINE), ("s2", RISKY)):
        await post_to_sandbox(dash.pipeline, name, text)
    base = await (await client.get("/thresholds/simulate?mode=rules_only")).json()
    moved = await (await client.get("/thresholds/simulate?mode=rules_only&t.risky_self_treatment.note=0.45")).json()
    r0, r1 = base["labels"]["risky_self_treatment"], moved["labels"]["risky_self_treatment"]
    assert (r0["note"]["produced"], r0["queue"]["produced"]) == (1, 1)
    assert (r1["note"]["produced"], r1["queue"]["produced"]) == (2, 0)
    bad = await client.get("/thresholds/simulate?t.promotion.note=2")
    assert bad.status == 400


async def test_saving_thresholds_writes_provenance_and_reloads(client, dash):
    shipped = (DEFAULT_POLICY_DIR / "thresholds.yaml").read_text()
    kept = dash.pipeline.policy.threshold("rules_only", "promotion", "queue").chosen_by
    html = await (await client.get("/thresholds")).text()
    response = await client.post("/thresholds", data={"csrf": csrf_in(html), "mode": "rules_only", "op": "save",
                                                      "t.promotion.note": "0.6"})
    assert response.status == 200 and "Saved and reloaded" in await response.text()
    saved = yaml.safe_load((dash.policy_dir / "thresholds.yaml").read_text())["thresholds"]["rules_only"]["promotion"]
    assert saved["note"]["value"] == 0.6 and "set by alice in the dashboard" in saved["note"]["chosen_by"]
    assert saved["queue"]["chosen_by"] == kept  # unchanged points keep their provenance
    assert dash.pipeline.policy.threshold("rules_only", "promotion", "note").value == 0.6
    assert load_policy(dash.policy_dir).version == dash.pipeline.policy.version
    assert (DEFAULT_POLICY_DIR / "thresholds.yaml").read_text() == shipped
    assert any(r["action"] == "thresholds_saved" for r in await dash.store.audit_log(community=SANDBOX))


async def test_invalid_thresholds_are_refused_and_the_file_is_kept(client, dash):
    before = (dash.policy_dir / "thresholds.yaml").read_text()
    version = dash.pipeline.policy.version
    html = await (await client.get("/thresholds")).text()
    for field, value, message in (("t.promotion.note", "1.5", "outside 0..1"), ("t.promotion.note", "abc", "not a number"),
                                  ("t.promotion.note", "0.1", "must not increase")):
        response = await client.post("/thresholds", data={"csrf": csrf_in(html), "mode": "rules_only", "op": "save",
                                                          field: value})
        assert response.status == 400 and message in await response.text()
    assert (dash.policy_dir / "thresholds.yaml").read_text() == before
    assert dash.pipeline.policy.version == version


async def test_saving_a_threshold_keeps_the_rest_of_the_policy_in_force(client, dash, tmp_path):
    """Another process published a policy with an edited note; a threshold saved here changes the threshold of
    that policy, and does not bring back the older note from this dashboard's folder."""
    import shutil
    published = tmp_path / "published"
    shutil.copytree(dash.policy_dir, published)
    notes = sorted((published / "notes").glob("*.yaml"))[0]
    notes.write_text(notes.read_text().replace("title: ", "title: Updated ", 1))
    dash.pipeline.set_policy(load_policy(published))   # what following that publication did
    html = await (await client.get("/thresholds")).text()
    response = await client.post("/thresholds", data={"csrf": csrf_in(html), "mode": "rules_only", "op": "save",
                                                      "t.promotion.note": "0.6"})
    assert response.status == 200
    now = dash.pipeline.policy
    assert now.threshold("rules_only", "promotion", "note").value == 0.6
    assert any(n.title.startswith("Updated ") for n in now.notes.values())
