"""Smoke: the real client logs in to the fake Discord with exactly the intents Caveat needs."""


async def test_login_with_minimal_intents_and_commands_synced(harness, fake):
    assert fake.intents == (1 << 0) | (1 << 9) | (1 << 15)
    names = sorted(c["name"] for c in fake.commands)
    assert names == ["caveat", "caveat-forget-me"]
    caveat = next(c for c in fake.commands if c["name"] == "caveat")
    assert int(caveat["default_member_permissions"]) == 1 << 13  # Manage Messages


def test_docs_invite_url_matches_the_permissions_the_bot_needs():
    from pathlib import Path

    from bot.client import invite_url, required_permissions
    docs = (Path(__file__).resolve().parents[2] / "docs" / "discord.md").read_text()
    assert f"permissions={required_permissions().value}" in docs
    assert "permissions=" in invite_url(1) and str(required_permissions().value) in invite_url(1)


def test_caveat_run_without_token_exits_2_with_a_clear_message(monkeypatch, capsys):
    from bot.cli import main
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    assert main(["run", "--rules-only"]) == 2
    assert "DISCORD_TOKEN is not set" in capsys.readouterr().err


def test_caveat_run_reports_an_unreachable_discord(monkeypatch, capsys, tmp_path):
    import socket

    from discord.http import Route

    from bot.cli import main
    with socket.socket() as s:   # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(Route, "BASE", f"http://127.0.0.1:{port}/api/v10")
    monkeypatch.setenv("DISCORD_TOKEN", "x")
    monkeypatch.setenv("CAVEAT_DB", str(tmp_path / "caveat.db"))
    monkeypatch.setenv("CAVEAT_MOD_CHANNEL_ID", "123")  # one channel for every server: no longer read, and it says so
    assert main(["run", "--rules-only"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach Discord" in err
    assert "CAVEAT_MOD_CHANNEL_ID is no longer read" in err and "/caveat setup" in err
