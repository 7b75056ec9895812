"""The `caveat` command as a user runs it: check, check --jsonl, policy validate, replay, export-feedback."""
from __future__ import annotations

import json
import os
import subprocess
import sys


from bot.cli import main

RISKY = "Put the rapa cream right on the fresh surgical wound, it stops the scar"
WARNING = "Don't put rapamycin on a fresh surgical wound, it slows healing"


def run_cli(*args, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script as a user would."""
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], input=stdin, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_check_prints_a_readable_verdict_with_sources(capsys):
    assert main(["check", "--rules-only", RISKY]) == 0
    out = capsys.readouterr().out
    assert "Action:  note_and_queue" in out
    assert "[rapa]" in out and "[surgical] [wound]" in out
    assert "[rapa-wounds]" in out and "PMID 15239621" in out
    assert "policy pol-" in out


def test_a_source_without_a_year_reads_cleanly(capsys):
    """The FDA's BeSafeRx page has no year in the evidence library: its line shows the publisher, no empty year."""
    assert main(["check", "--rules-only", "DM me, I sell sirolimus 1mg, no script needed"]) == 0
    out = capsys.readouterr().out
    assert "[buying-online]" in out
    line = next(x for x in out.splitlines() if "BeSafeRx" in x and x.lstrip().startswith("[1]"))
    assert "US Food and Drug Administration. https://www.fda.gov/" in line and ", ." not in line


def test_check_warning_gets_no_note(capsys):
    assert main(["check", "--rules-only", WARNING]) == 0
    out = capsys.readouterr().out
    assert "Action:  none" in out and "Note:" not in out


def test_check_jsonl_contract(tmp_path, capsys):
    f = tmp_path / "in.jsonl"
    f.write_text(json.dumps({"id": "a", "text": RISKY}) + "\n\n" + json.dumps({"id": 7, "text": WARNING}) + "\n")
    assert main(["check", "--rules-only", "--jsonl", str(f)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in rows] == ["a", 7]
    assert set(rows[0]) == {"id", "labels", "scores", "action", "note_id", "rules"}
    assert rows[0]["labels"] == ["risky_self_treatment"] and rows[0]["note_id"] == "rapa-wounds"
    assert rows[0]["rules"] == ["rapa-wound"]
    assert set(rows[0]["scores"]) == {"emergency", "risky_self_treatment", "unsupported_claim", "promotion"}
    assert rows[1]["action"] == "none" and rows[1]["labels"] == []


def test_check_jsonl_from_stdin():
    res = run_cli("check", "--rules-only", "--jsonl", "-", stdin=json.dumps({"id": 1, "text": "DM me, I sell sirolimus"}))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["labels"] == ["promotion"]


def test_check_jsonl_bad_line_names_file_and_line(tmp_path, capsys):
    f = tmp_path / "in.jsonl"
    f.write_text(json.dumps({"id": 1, "text": "ok"}) + "\n{oops\n")
    assert main(["check", "--rules-only", "--jsonl", str(f)]) == 2
    assert f"{f}:2: not valid JSON" in capsys.readouterr().err


def test_policy_validate_ok_and_errors(policy_dir, capsys):
    assert main(["policy", "validate", str(policy_dir)]) == 0
    assert "ok:" in capsys.readouterr().out
    (policy_dir / "rules.yaml").write_text((policy_dir / "rules.yaml").read_text().replace("weight: 0.6", "weight: lots", 1))
    assert main(["policy", "validate", str(policy_dir)]) == 2
    err = capsys.readouterr().err
    assert "rules.yaml:" in err and "weight" in err


def _expire_rapa_wounds(policy_dir) -> None:
    """Move the wound-healing note's review_by into the past (it is the first note in rapamycin.yaml)."""
    path = policy_dir / "notes" / "rapamycin.yaml"
    path.write_text(path.read_text().replace("review_by: 2027-05-22", "review_by: 2026-01-01", 1))


def test_policy_validate_warns_loudly_about_an_expired_note_and_strict_fails(policy_dir, capsys):
    _expire_rapa_wounds(policy_dir)
    assert main(["policy", "validate", str(policy_dir)]) == 0
    out, err = capsys.readouterr()
    assert "ok:" in out and "(1 more withdrawn)" in out
    assert "warning: note 'rapa-wounds' passed its review_by date 2026-01-01 and is withdrawn" in err
    assert "notes/rapamycin.yaml:" in err
    assert main(["policy", "validate", "--strict", str(policy_dir)]) == 1


def test_check_after_a_note_expired_queues_instead_of_noting_and_says_why(policy_dir, capsys):
    _expire_rapa_wounds(policy_dir)
    assert main(["--policy", str(policy_dir), "check", "--rules-only", RISKY]) == 0
    out, err = capsys.readouterr()
    assert "Action:  queue" in out and "Note:" not in out
    assert "Note 'rapa-wounds' was withdrawn (past its review date 2026-01-01)" in out
    assert err.count("passed its review_by date") == 1
    assert main(["--policy", str(policy_dir), "check", "--rules-only", "I want to kill myself tonight"]) == 0
    out, err = capsys.readouterr()
    assert "Action:  escalate" in out and "Crisis resources:" in out
    assert "passed its review_by date" not in err  # warned once per process, not per command


def test_replay_discord_export_stores_replayed_cases_and_posts_nothing(tmp_path, capsys):
    export = {
        "guild": {"id": "1", "name": "Longevity"}, "channel": {"id": "42", "name": "general"},
        "messages": [
            {"id": "100", "timestamp": "2026-11-01T10:00:00+00:00", "content": RISKY, "author": {"id": "7", "name": "a", "isBot": False}},
            {"id": "101", "timestamp": "2026-11-01T10:01:00+00:00", "content": WARNING, "author": {"id": "8", "name": "b", "isBot": False}},
            {"id": "102", "timestamp": "2026-11-01T10:02:00+00:00", "content": "DM me, I sell sirolimus", "author": {"id": "9", "name": "bot", "isBot": True}},
        ],
    }
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    db = tmp_path / "replay.db"
    assert main(["replay", "--rules-only", "--no-progress", "--db", str(db), str(path)]) == 0
    out = capsys.readouterr().out
    assert "risky_self_treatment" in out and "2 posts read, 2 scored" in out
    row = [line for line in out.splitlines() if line.startswith("risky_self_treatment")][0].split()
    assert row[4] == "1"  # one note_and_queue
    # Running the same export again stores nothing twice.
    assert main(["replay", "--rules-only", "--no-progress", "--db", str(db), str(path)]) == 0
    assert "2 already stored" in capsys.readouterr().out

    import asyncio
    from bot.storage import Store

    async def cases():
        s = await Store.open(db)
        try:
            return (await s.cases(community="1", status=None), await s.cases(community="1", include_replayed=True),
                    await s._all("SELECT * FROM replies"))
        finally:
            await s.close()
    live, replayed, replies = asyncio.run(cases())
    assert live == [] and replies == []  # the queue hides history unless asked; no reply was ever claimed
    assert len(replayed) == 1 and replayed[0]["kind"] == "replay"


def test_replay_bad_export_names_the_line(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"id": 1, "text": "fine"}) + "\n" + json.dumps({"id": 2}) + "\n")
    assert main(["replay", "--rules-only", "--no-progress", "--db", str(tmp_path / "x.db"), str(path)]) == 2
    assert f"{path}:2: each line needs a string 'text' field" in capsys.readouterr().err


def test_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["check", "--rules-only", "--jsonl", str(tmp_path / "nope.jsonl")]) == 2
    assert "file not found" in capsys.readouterr().err
