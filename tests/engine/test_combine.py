"""The rule-model combination: the learned formula, the rule floor, and the text the model reads."""
from __future__ import annotations

import math

import pytest
import yaml

from bot.engine import Engine, Post
from policies.loader import load_policy


def post(text: str) -> Post:
    return Post("test", "1", "c1", "u1", text)


LOW = {"emergency": 0.001, "risky_self_treatment": 0.001, "unsupported_claim": 0.001, "promotion": 0.001}


def write_combine(policy_dir, labels: dict, floor: float = 0.6):
    (policy_dir / "combine.yaml").write_text(yaml.safe_dump({"combine": {
        "model_version": "test-model", "fitted_on": "written by a test", "labels": labels,
        "rule_floor": {"queue_at_weight": floor}}}), encoding="utf-8")
    return load_policy(policy_dir)


def test_a_crisis_rule_hit_reaches_the_queue_even_when_the_model_says_no(policy):
    d = Engine(policy).assess(post("i want to kill myself tonight"), LOW, model_version="m")
    assert d.action in ("queue", "escalate")
    assert any(h.rule_id == "crisis" and h.active for h in d.rule_hits)


def test_an_excused_crisis_hit_does_not_trigger_the_floor(policy):
    d = Engine(policy).assess(post("I tried to kill myself years ago and I am doing well now"), LOW, model_version="m")
    assert d.action == "none"


def test_the_floor_is_read_from_policy(policy_dir):
    strict = write_combine(policy_dir, {}, floor=0.9)
    assert Engine(strict).assess(post("i want to kill myself tonight"), LOW, model_version="m").action == "none"


def test_combined_score_follows_the_documented_formula(policy_dir):
    w = {"bias": -1.0, "model_logit": 0.5, "rule_active": 2.0, "rule_suppressed": -1.0}
    pol = write_combine(policy_dir, {"risky_self_treatment": w})
    scores = dict(LOW, risky_self_treatment=0.2)
    text = "Put the rapa cream right on the fresh surgical wound, it stops the scar"
    d = Engine(pol).assess(post(text), scores, model_version="m")
    active = d.rule_scores["risky_self_treatment"]
    assert active > 0
    z = -1.0 + 0.5 * math.log(0.2 / 0.8) + 2.0 * active
    assert d.scores["risky_self_treatment"] == pytest.approx(1 / (1 + math.exp(-z)), abs=1e-5)
    assert d.model_scores["risky_self_treatment"] == 0.2  # the raw model score is kept for the audit trail
    # a label without fitted weights keeps the model's probability
    assert d.scores["promotion"] == pytest.approx(0.001)


def test_a_suppressed_hit_lowers_the_score_when_its_weight_is_negative(policy_dir):
    w = {"bias": 0.0, "model_logit": 1.0, "rule_active": 0.0, "rule_suppressed": -2.0}
    pol = write_combine(policy_dir, {"risky_self_treatment": w})
    scores = dict(LOW, risky_self_treatment=0.5)
    warning = Engine(pol).assess(post("Don't put rapamycin on a fresh surgical wound, it slows healing"), scores, model_version="m")
    plain = Engine(pol).assess(post("my hair is thinner this winter"), scores, model_version="m")
    assert warning.scores["risky_self_treatment"] < plain.scores["risky_self_treatment"] == pytest.approx(0.5)


def test_combine_file_errors_name_file_and_line(policy_dir):
    (policy_dir / "combine.yaml").write_text("combine:\n  labels:\n    emergency:\n      bias: 1\n      model_logit: -2\n")
    from policies.loader import PolicyError
    with pytest.raises(PolicyError, match=r"combine\.yaml:\d+"):
        load_policy(policy_dir)


def test_the_model_reads_the_rules_normalized_text(policy):
    engine = Engine(policy)
    plain = "Put the rapa cream right on the fresh surgical wound, it stops the scar"
    cyrillic = plain.replace("a", "\u0430").replace("e", "\u0435").replace("o", "\u043e")  # Cyrillic look-alikes
    leet = plain.replace("rapa", "r@p@")
    assert cyrillic != plain
    assert engine.model_input(cyrillic) == engine.model_input(plain) == engine.model_input(leet)
    assert engine.model_input("\u200bI n\u0336eed help") == engine.model_input("I need help")


def test_a_curated_rule_insists_on_its_note_whatever_the_model_says(policy):
    engine = Engine(policy)
    risky = "Put the rapa cream right on the fresh surgical wound, it stops the scar"
    d = engine.assess(post(risky), LOW, model_version="m")
    assert d.action == "note_and_queue" and d.note.id == "rapa-wounds"
    assert "rapa-wound requires at least" in d.why
    warning = engine.assess(post("Don't put rapamycin on a fresh surgical wound, it slows healing"), LOW, model_version="m")
    assert warning.note is None and warning.action == "none"
    cyrillic = engine.assess(post(risky.replace("a", "\u0430")), LOW, model_version="m")
    assert (cyrillic.action, cyrillic.labels, cyrillic.note.id) == (d.action, d.labels, d.note.id)


def test_min_action_must_be_a_known_action(policy_dir):
    rules = policy_dir / "rules.yaml"
    rules.write_text(rules.read_text().replace("min_action: note_and_queue", "min_action: shout", 1))
    from policies.loader import PolicyError
    with pytest.raises(PolicyError, match=r"rules\.yaml:\d+"):
        load_policy(policy_dir)
