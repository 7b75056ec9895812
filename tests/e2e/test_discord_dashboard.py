"""The dashboard and the Discord bot on one database: a moderator's click on the web happens on Discord."""
from __future__ import annotations

import re

from aiohttp.test_utils import TestClient, TestServer

from bot.community import update_config
from bot.web.app import build_app

RISKY = "Put the rapa cream right on the fresh surgical wound, it stops the scar"
QUEUED = "I am going to stop my meds cold turkey"


def csrf_in(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


async def web_moderator(harness, user, community):
    """A dashboard session for `user` through the one-time link `/caveat dashboard` would send."""
    client = TestClient(TestServer(build_app(harness.store, harness.bot.pipeline, harness.policy.directory)))
    await client.start_server()
    token = await harness.store.create_login_link(community, user.id, user.name)
    page = await client.get(f"/login/link/{token}")
    response = await client.post(f"/login/link/{token}", data={"csrf": csrf_in(await page.text())})
    assert response.url.path == "/queue"
    return client


async def act(client, case_id, action, **form):
    page = await client.get(f"/case/{case_id}")
    return await client.post(f"/case/{case_id}/{action}", data={"csrf": csrf_in(await page.text()), **form})


async def test_send_note_and_remove_from_the_dashboard_happen_on_discord(harness, fake):
    await update_config(harness.store, harness.policy, fake.guild_id, "owner", {"shadow_mode": "shadow"})
    since = fake.mark()
    msg, risky = await harness.post(RISKY)
    other, queued = await harness.post(QUEUED, author=fake.other_member)
    cards = {r.json["embeds"][0]["title"].split(" · ")[0]: r.response["id"]
             for r in fake.find("POST", rf"^/channels/{fake.mods.id}/messages$", since=since)}
    web = await web_moderator(harness, fake.alice, fake.guild_id)
    try:
        response = await act(web, risky.case_id, "send_note")
        assert response.status == 200 and "Done: send note" in await response.text()
        note = await fake.wait_for_request("POST", rf"^/channels/{fake.general.id}/messages$", since=since)
        assert str(note.json["message_reference"]["message_id"]) == msg["id"]
        card_id = cards[f"[shadow] Case #{risky.case_id}"]
        patch = await fake.wait_for_request("PATCH", rf"^/channels/{fake.mods.id}/messages/{card_id}$", since=since)
        assert "Resolved: caution note sent" in patch.json["embeds"][0]["fields"][-1]["value"]
        assert f"<@{fake.alice.id}>" in patch.json["embeds"][0]["fields"][-1]["value"]   # the moderator, by id

        # Discord echoes the deletion back as MESSAGE_DELETE; wait until the bot has handled that too.
        echoed = harness.bot.wait_for("caveat_post_handled", check=lambda mid, _: str(mid) == other["id"], timeout=5)
        response = await act(web, queued.case_id, "remove", reason="dangerous_advice")
        assert response.status == 200
        delete = await fake.wait_for_request("DELETE", rf"^/channels/{fake.general.id}/messages/{other['id']}$")
        await echoed
        assert "dangerous_advice" in delete.headers["X-Audit-Log-Reason"]
        events = {(e["actor"], e["action"]) for e in
                  await harness.store.audit_log(community=fake.guild_id, case_id=queued.case_id)}
        assert (fake.alice.id, "removed") in events and (fake.alice.id, "post_removed") in events
    finally:
        await web.close()


async def test_a_moderator_of_another_server_cannot_open_or_act_on_the_case(harness, fake):
    _, outcome = await harness.post(QUEUED)
    web = await web_moderator(harness, fake.carol, fake.g2.id)
    try:
        assert (await web.get(f"/case/{outcome.case_id}")).status == 404
        queue = await (await web.get("/queue")).text()
        assert QUEUED not in queue
        page = await web.get("/queue")
        response = await web.post(f"/case/{outcome.case_id}/claim", data={"csrf": csrf_in(await page.text())})
        assert response.status == 404
        assert (await harness.store.case(outcome.case_id, community=fake.guild_id))["status"] == "open"
    finally:
        await web.close()
