"""The engine: the issue's two examples, the union of actions, determinism, versions and the model fallback."""
from __future__ import annotations

import pytest

from bot.engine import Engine, Post
from bot.engine.actions import union, union_all


def post(text: str, **kw) -> Post:
    return Post("test", "1", "c1", "u1", text, **kw)


@pytest.fixture(scope="module")
def engine(policy):
    return Engine(policy)


def test_risky_instruction_gets_a_wound_healing_note(engine):
    d = engine.assess(post("Put the rapa cream right on the fresh surgical wound, it stops the scar"))
    assert d.action in ("note", "note_and_queue")
    assert d.note.id == "rapa-wounds"
    assert any("wound" in c.title.lower() for c in d.note.citations)
    assert d.labels == ("risky_self_treatment",)


def test_warning_gets_no_public_note(engine):
    d = engine.assess(post("Don't put rapamycin on a fresh surgical wound, it slows healing"))
    assert d.action == "none" and d.note is None
    assert "set aside" in d.why


@pytest.mark.parametrize("a,b,expected", [
    ("none", "note", "note"), ("note", "queue", "note_and_queue"), ("queue", "note", "note_and_queue"),
    ("note_and_queue", "queue", "note_and_queue"), ("queue", "escalate", "escalate"), ("escalate", "note", "escalate"),
    ("none", "none", "none"), ("queue", "queue", "queue"),
])
def test_union_harshest_wins(a, b, expected):
    assert union(a, b) == expected == union(b, a)


def test_union_of_many():
    assert union_all(["note", "none", "queue"]) == "note_and_queue"
    assert union_all([]) == "none"


def test_several_rules_firing_take_the_harshest_action(engine):
    d = engine.assess(post("DM me, I sell sirolimus. I want to kill myself tonight"))
    assert d.action == "escalate"
    assert set(d.labels) == {"emergency", "promotion"}
    assert d.labels[0] == "emergency"
    assert d.resources and "988" in d.resources[0].contact


def test_crisis_resources_follow_the_locale(engine):
    d = engine.assess(post("I want to kill myself tonight", locale="en-GB"))
    assert "116 123" in d.resources[0].contact


def test_assess_is_deterministic_and_carries_versions(engine, policy):
    a = engine.assess(post("DM me, I sell sirolimus"))
    b = engine.assess(post("DM me, I sell sirolimus"))
    assert a.to_dict() == b.to_dict()
    assert a.policy_version == policy.version and a.model_version == "rules-only"
    assert a.rule_hits[0].spans[0].text.startswith("DM me")


def test_model_scores_decide_stance_when_model_thresholds_exist(policy_dir):
    import yaml
    from policies.loader import load_policy
    thr = policy_dir / "thresholds.yaml"
    data = yaml.safe_load(thr.read_text())
    data["thresholds"].setdefault("model", {})["risky_self_treatment"] = {
        "note": {"value": 0.8, "chosen_by": "test", "eval_set": "test"},
        "queue": {"value": 0.5, "chosen_by": "test", "eval_set": "test"}}
    thr.write_text(yaml.safe_dump(data))
    (policy_dir / "combine.yaml").write_text("combine:\n  labels: {}\n")  # no fitted combination: raw model scores
    eng = Engine(load_policy(policy_dir))
    scores = {"emergency": 0.0, "risky_self_treatment": 0.9, "unsupported_claim": 0.0, "promotion": 0.0}
    d = eng.assess(post("Don't put rapamycin on a fresh surgical wound"), scores, model_version="m1")
    assert d.action == "note_and_queue" and d.mode == "model" and d.model_version == "m1"
    assert d.note.id == "rapa-wounds"  # the topic still comes from the rule
    low = dict(scores, risky_self_treatment=0.6)
    assert eng.assess(post("x"), low, model_version="m1").action == "queue"


def test_model_failure_falls_back_to_rules_and_queues_matches(engine):
    d = engine.assess(post("Is it safe to put rapa cream on my surgical scar?"), model_version="m1", model_failed=True)
    assert d.mode == "fallback" and d.action == "queue"
    assert "unavailable" in d.why
    benign = engine.assess(post("Good morning everyone"), model_version="m1", model_failed=True)
    assert benign.action == "none"
