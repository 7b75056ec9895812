"""Smoke: the real client logs in to the fake Discord with exactly the intents Caveat needs."""


async def test_login_with_minimal_intents_and_commands_synced(harness, fake):
    assert fake.intents == (1 << 0) | (1 << 9) | (1 << 15)
    names = sorted(c["name"] for c in fake.commands)
    assert names == ["caveat", "caveat-forget-me"]
    caveat = next(c for c in fake.commands if c["name"] == "caveat")
    assert int(caveat["default_member_permissions"]) == 1 << 13  # Manage Messages
