"""The dashboard's settings page changes the same per-server settings as `/caveat setup`, for its own server only."""
from __future__ import annotations

from bot.community import load_config
from bot.web.queries import SANDBOX
from web_helpers import csrf_in


async def _save(client, **fields):
    page = await client.get("/settings")
    return await client.post("/settings", data={"csrf": csrf_in(await page.text()), **fields})


async def test_settings_are_saved_for_this_community_only_and_audited(client, dash):
    response = await _save(client, mod_channel_id="123456789012345678", oncall_role_id="<@&234567890123456789>",
                           shadow_mode="live", locale="en-GB", note_language="en", realert_minutes="5")
    html = await response.text()
    assert response.status == 200 and "Saved." in html and 'value="123456789012345678"' in html
    config = await load_config(dash.store, dash.pipeline.policy, SANDBOX)
    assert (config.mod_channel_id, config.oncall_role_id, config.shadow_mode, config.locale, config.realert_minutes) \
        == ("123456789012345678", "234567890123456789", False, "en-GB", 5.0)
    assert (await load_config(dash.store, dash.pipeline.policy, "another-server")).mod_channel_id is None
    [event] = await dash.store.audit_log(community=SANDBOX, action="settings_changed")
    assert event["actor"] == "operator:alice" and event["detail"]["changed"]["locale"] == "en-GB"


async def test_a_wrong_value_saves_nothing_and_says_which(client, dash):
    response = await _save(client, mod_channel_id="#moderators", locale="en-GB", shadow_mode="live",
                           note_language="en", realert_minutes="15")
    html = await response.text()
    assert response.status == 400 and "Nothing was saved: mod_channel_id must be a numeric Discord id" in html
    config = await load_config(dash.store, dash.pipeline.policy, SANDBOX)
    assert config.locale == dash.pipeline.policy.community.default_locale and config.shadow_mode is True
    response = await _save(client, realert_minutes="-3", shadow_mode="live", locale="en-US", note_language="en")
    assert response.status == 400 and "realert_minutes must be between 0 and 1440" in await response.text()
