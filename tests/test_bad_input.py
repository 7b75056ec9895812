"""Bad input (issue 21): a clear error and nothing lost.

Long posts cost a bounded, linear amount and never block the event loop; a lone surrogate never crashes
`check`, `replay` or the pipeline; wrongly typed exports and non-UTF-8 files are errors that name the file and
the line or message; JSON lines without ids replayed into one database are each scored once.
All text here is made up for the test.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from bot.cli import main
from bot.engine import Engine, Post
from bot.pipeline import Pipeline
from bot.replay import load_export
from classifiers.rules import MAX_ASSESSED_CHARS, RuleSet

CRISIS = "I want to kill myself tonight"
RISKY = "Put the rapa cream right on the fresh surgical wound, it stops the scar"
FILLER = "we walked the dog to the bakery and talked about the weather and the garden"


def replay(tmp_path, path, capsys, db="replay.db"):
    code = main(["replay", "--rules-only", "--no-progress", "--db", str(tmp_path / db), str(path)])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------------- long posts

def test_a_long_post_costs_linear_time(policy):
    """640 KB of a repeated risky sentence took 40 s (quadratic pairing of terms and near words)."""
    rules = RuleSet(policy.rules)
    text = "rapamycin on my wound " * 10_000  # 220 KB
    t0 = time.perf_counter()
    hits = rules.match(text)
    assert time.perf_counter() - t0 < 2.0
    assert "rapa-wound" in [h.rule_id for h in hits]


def test_the_matcher_itself_is_linear_without_the_cap(policy):
    rules = RuleSet(policy.rules, max_chars=10**9)
    small, big = "rapamycin on my wound. " * 1_000, "rapamycin on my wound. " * 16_000
    rules.match(small)
    t0 = time.perf_counter()
    rules.match(small)
    t_small = time.perf_counter() - t0
    t0 = time.perf_counter()
    rules.match(big)
    t_big = time.perf_counter() - t0
    assert t_big < 40 * max(t_small, 0.005)  # 16x the text: linear is ~16x, quadratic ~256x


def test_a_crisis_past_the_cap_still_escalates_and_the_decision_says_it_was_truncated(policy):
    text = (FILLER + ". ") * (3 * MAX_ASSESSED_CHARS // len(FILLER)) + CRISIS
    assert len(text) > 2 * MAX_ASSESSED_CHARS
    hits = RuleSet(policy.rules).match(text)
    crisis = [h for h in hits if h.rule_id == "crisis"]
    assert crisis and crisis[0].active
    assert all(s.text == text[s.start:s.end] for s in crisis[0].spans)
    assert crisis[0].spans[0].text.lower() == "kill myself"

    pipeline = Pipeline(None, policy)
    d = asyncio.run(pipeline.decide(Post("discord", "1", "c", "a", text)))
    assert d.action == "escalate"
    assert f"first {MAX_ASSESSED_CHARS:,}" in d.why and "emergency rules read all of it" in d.why


def test_only_emergency_rules_read_past_the_cap(policy):
    text = (FILLER + ". ") * (2 * MAX_ASSESSED_CHARS // len(FILLER)) + RISKY
    assert [h.rule_id for h in RuleSet(policy.rules).match(text)] == []
    assert "rapa-wound" in [h.rule_id for h in RuleSet(policy.rules).match(RISKY)]


def test_a_long_post_is_assessed_off_the_event_loop(policy):
    pipeline = Pipeline(None, policy)
    threads = []
    real = pipeline.engine.assess

    def spy(*args, **kw):
        threads.append(threading.current_thread())
        return real(*args, **kw)

    pipeline.engine.assess = spy

    async def run():
        await pipeline.decide(Post("discord", "1", "c", "a", "short post about coffee"))
        await pipeline.decide(Post("discord", "2", "c", "a", (FILLER + " ") * 100 + RISKY))

    asyncio.run(run())
    assert threads[0] is threading.main_thread()
    assert threads[1] is not threading.main_thread()


def test_check_says_a_long_post_was_truncated(tmp_path, capsys):
    text = (FILLER + " ") * (MAX_ASSESSED_CHARS // len(FILLER) + 10) + CRISIS
    assert main(["check", "--rules-only", "--json", text]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["action"] == "escalate" and "emergency rules read all of it" in d["why"]


# ---------------------------------------------------------------------------------------------- surrogates

def test_check_with_a_lone_surrogate(tmp_path, capsys):
    assert main(["check", "--rules-only", CRISIS + " \ud800"]) == 0
    out = capsys.readouterr().out
    assert "Action:  escalate" in out and "\ufffd" in out


def test_check_jsonl_with_lone_surrogates_in_text_and_id(tmp_path, capsys):
    f = tmp_path / "in.jsonl"
    f.write_text('{"id": "a\\ud800", "text": "hello \\ud800 there"}\n'
                 + json.dumps({"id": 2, "text": CRISIS + " \udfff"}, ensure_ascii=True) + "\n")
    assert main(["check", "--rules-only", "--jsonl", str(f)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in rows] == ["a\ufffd", 2]
    assert rows[1]["action"] == "escalate"


def test_replay_with_lone_surrogates_stores_every_post(tmp_path, capsys):
    path = tmp_path / "posts.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=True) + "\n" for r in [
        {"id": "1", "text": "hello \ud800 there"}, {"id": "2", "text": CRISIS + " \udc00"},
        {"id": "3", "text": RISKY, "author": "x\ud83d"}]))
    code, out, err = replay(tmp_path, path, capsys)
    assert code == 0, err
    assert "3 posts read, 3 scored, 0 already stored" in out


def test_an_exporter_file_with_lone_surrogates(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps({"guild": {"id": "1"}, "channel": {"id": "2", "name": "gen\ud800"}, "messages": [
        {"id": "10", "content": CRISIS + " \ud800", "author": {"id": "7", "name": "b\udfff"}}]}, ensure_ascii=True))
    [post] = load_export(str(path))
    assert post.text == CRISIS + " \ufffd" and post.author_name == "b\ufffd" and post.channel_name == "gen\ufffd"


def test_assess_with_a_lone_surrogate(policy):
    d = Engine(policy).assess(Post("discord", "1", "c", "a", CRISIS + " \ud800"))
    assert d.action == "escalate"
    assert Engine(policy).model_input("r\ud800apa") == "r\ufffdapa"


async def test_the_pipeline_decides_on_a_post_with_a_lone_surrogate(policy, store):
    d = await Pipeline(store, policy).decide(Post("discord", "1", "c", "a", CRISIS + " \ud800"))
    assert d.action == "escalate"


async def test_the_gateway_path_stores_and_escalates_a_crisis_post_with_a_lone_surrogate(policy, store):
    post = Post("discord", "1", "c", "a", CRISIS + " \ud800", community_id="g", author_name="n\udfff")
    outcome = await Pipeline(store, policy).handle(post)
    assert outcome.decision.action == "escalate" and outcome.reply == "resources"


# ---------------------------------------------------------------------------------------------- not UTF-8

@pytest.mark.parametrize("command", ["check", "replay"])
def test_non_utf8_json_lines_name_file_and_line(tmp_path, capsys, command):
    path = tmp_path / "posts.jsonl"
    path.write_bytes(b'{"id": 1, "text": "fine"}\n{"id": 2, "text": "caf\xe9 au lait"}\n')
    if command == "check":
        assert main(["check", "--rules-only", "--jsonl", str(path)]) == 2
        err = capsys.readouterr().err
    else:
        code, _, err = replay(tmp_path, path, capsys)
        assert code == 2
    assert f"caveat: {path}:2: not UTF-8" in err and "Traceback" not in err


def test_non_utf8_exporter_file_names_the_line(tmp_path, capsys):
    path = tmp_path / "export.json"
    path.write_bytes(b'{\n "messages": [\n  {"id": "1", "content": "ol\xe1"}\n ]\n}\n')
    code, _, err = replay(tmp_path, path, capsys)
    assert code == 2 and f"caveat: {path}:3: not UTF-8" in err


def test_a_line_separator_inside_a_json_string_is_not_a_line_break(tmp_path):
    path = tmp_path / "posts.jsonl"
    path.write_bytes(json.dumps({"id": 1, "text": "one\u2028two\x1cthree"}, ensure_ascii=False).encode() + b"\n")
    [post] = load_export(str(path))
    assert post.text == "one\u2028two\x1cthree"


# ---------------------------------------------------------------------------------------------- wrong types

def _export(tmp_path, message: dict | None = None, **top) -> str:
    data = {"guild": {"id": "1"}, "channel": {"id": "2", "name": "general"},
            "messages": [{"id": "9", "content": "first", "author": {"id": "7"}},
                         message if message is not None else {"id": "10", "content": "x", "author": {"id": "7"}}]}
    data.update(top)
    path = tmp_path / "export.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize("message, expected", [
    ({"id": "10", "content": 5}, "messages[1].content must be a string, not a number"),
    ({"id": "10", "content": ["hi"]}, "messages[1].content must be a string, not a list"),
    ({"id": "10", "content": "hi", "author": "bob"}, "messages[1]: 'author' must be an object, not a string"),
    ({"id": ["10"], "content": "hi"}, "messages[1]: 'id' must be a string or an integer, not a list"),
    ({"id": "10", "content": "hi", "timestamp": 1730000000}, "messages[1].timestamp must be an ISO 8601 time"),
    ({"id": "10", "content": "hi", "timestamp": "yesterday"}, "messages[1].timestamp is not an ISO 8601 time"),
    ({"id": "10", "content": "hi", "author": {"id": {"x": 1}}}, "messages[1].author: 'id' must be a string"),
    ({"id": "10", "content": "hi", "author": {"name": 3}}, "messages[1].author.name must be a string"),
    ({"id": "10", "content": "hi", "author": {"isBot": "no"}}, "messages[1].author.isBot must be true or false"),
    ({"id": "9", "content": "again"}, "messages[1]: id '9' was already used by messages[0]"),
    ("hello", "messages[1] must be an object, not a string"),
])
def test_wrongly_typed_exporter_fields_name_file_and_message(tmp_path, capsys, message, expected):
    path = _export(tmp_path, message)
    with pytest.raises(ValueError) as exc:
        load_export(path)
    assert str(exc.value).startswith(f"{path}: ") and expected in str(exc.value)
    code, _, err = replay(tmp_path, path, capsys)
    assert code == 2 and err.startswith(f"caveat: {path}: ") and "Traceback" not in err


@pytest.mark.parametrize("top, expected", [
    ({"messages": {"0": {"id": "1"}}}, "'messages' must be a list, not an object"),
    ({"channel": "general"}, "'channel' must be an object, not a string"),
    ({"guild": [1]}, "'guild' must be an object, not a list"),
])
def test_wrongly_typed_exporter_structure_names_the_file(tmp_path, top, expected):
    path = _export(tmp_path, **top)
    with pytest.raises(ValueError, match="^" + path) as exc:
        load_export(path)
    assert expected in str(exc.value)


@pytest.mark.parametrize("row, expected", [
    ({"id": [1], "text": "hi"}, "'id' must be a non-empty string or an integer, not a list"),
    ({"id": True, "text": "hi"}, "'id' must be a non-empty string or an integer, not a boolean"),
    ({"text": "hi", "timestamp": 1730000000}, "'timestamp' must be an ISO 8601 time string, not a number"),
    ({"text": "hi", "author": {"id": 1}}, "'author' must be a string or an integer, not an object"),
])
def test_wrongly_typed_json_lines_name_file_and_line(tmp_path, capsys, row, expected):
    path = tmp_path / "posts.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "fine"}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ValueError) as exc:
        load_export(str(path))
    assert str(exc.value).startswith(f"{path}:2: ") and expected in str(exc.value)


def test_check_jsonl_rejects_an_id_that_is_not_a_string_or_integer(tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"id": 1, "text": "ok"}) + "\n" + json.dumps({"id": {"a": 1}, "text": "ok"}) + "\n")
    assert main(["check", "--rules-only", "--jsonl", str(path)]) == 2
    assert f"{path}:2: 'id' must be" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- ids

def test_duplicate_ids_in_one_file_name_both_lines(tmp_path, capsys):
    path = tmp_path / "posts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"id": 1, "text": "first"}, {"id": 2, "text": "second"}, {"id": "1", "text": "third"}]) + "\n")
    code, _, err = replay(tmp_path, path, capsys)
    assert code == 2 and f"{path}:3: id '1' was already used on line 1" in err


def test_json_lines_without_ids_from_two_files_are_all_scored_once(tmp_path, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("\n".join(json.dumps({"text": t}) for t in [RISKY, "coffee is nice", "coffee is nice"]) + "\n")
    b.write_text("\n".join(json.dumps({"text": t}) for t in [CRISIS, "tea is nice", RISKY]) + "\n")
    code, out, err = replay(tmp_path, a, capsys)
    assert code == 0, err
    assert "3 posts read, 3 scored, 0 already stored" in out  # two identical rows are two posts
    code, out, _ = replay(tmp_path, b, capsys)
    assert "3 posts read, 2 scored, 1 already stored" in out  # b's first two lines are new; RISKY was in a
    code, out, _ = replay(tmp_path, a, capsys)
    assert "3 posts read, 0 scored, 3 already stored" in out  # the same file again: recognised


def test_hashed_ids_depend_on_channel_author_and_time(tmp_path):
    path = tmp_path / "posts.jsonl"
    rows = [{"text": "same words"}, {"text": "same words", "channel": "c2"}, {"text": "same words", "author": 5},
            {"text": "same words", "timestamp": "2026-11-01T10:00:00Z"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ids = [p.message_id for p in load_export(str(path))]
    assert len(set(ids)) == 4 and all(i.startswith("sha256-") for i in ids)
    assert ids == [p.message_id for p in load_export(str(path))]
