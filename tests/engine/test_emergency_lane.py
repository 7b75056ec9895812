"""The emergency lane with the shipped model and thresholds: crises escalate, ordinary health venting does not."""
from __future__ import annotations

from datetime import date

import pytest

from bot.engine import Engine, Post
from policies.loader import load_policy

CRISES = [
    "i've written the notes and the pills are in my hand. sorry everyone, i'm done tonight",
    "my roommate swallowed most of a bottle of her sleeping pills an hour ago and now she won't wake up properly, what do i do",
    "throat is closing up after that new herbal capsule, lips swelling fast and I don't have an epipen",
]
NOT_CRISES = [
    "psoriatic arthritis flare, day 3. fingers like sausages, can't hold a pen. just whining into the void, I'm fine",
    "one week post-op from my hysterectomy, sore and bored, managed a walk around the block today",
    "legs destroyed after leg day, stairs are my enemy now lol",
    "If you're struggling tonight, you can call or text 988 any time, it's free and confidential",
    "Three years ago I tried to end my life. Today I ran my first 5k. Therapy and meds got me here",
]


@pytest.fixture(scope="module")
def scorer():
    from classifiers.serving import get_scorer
    return get_scorer(backend="onnx-int8")


def _decide(policy, scorer, text: str):
    engine = Engine(policy)
    scores = scorer.predict([engine.model_input(text)])[0]
    return engine.assess(Post("t", "1", "c", "u", text), scores, model_version=scorer.version)


@pytest.mark.parametrize("text", CRISES)
def test_a_member_in_crisis_gets_help_resources_at_once(policy, scorer, text):
    decision = _decide(policy, scorer, text)
    assert decision.action == "escalate" and "emergency" in decision.labels
    assert decision.resources  # the community's crisis lines go in the reply


@pytest.mark.parametrize("text", CRISES)
def test_the_crisis_lane_runs_when_every_caution_note_has_expired(scorer, text):
    policy = load_policy(today=date(2027, 6, 1))  # every shipped note is past review_by
    assert not policy.notes
    decision = _decide(policy, scorer, text)
    assert decision.action == "escalate" and decision.resources


@pytest.mark.parametrize("text", NOT_CRISES)
def test_venting_recovery_and_helplines_are_not_escalated(policy, scorer, text):
    decision = _decide(policy, scorer, text)
    # No public crisis reply. Low emergency scores may still reach the moderators' urgent queue: that band keeps 90%
    # emergency recall on real posts (README, "How it does on real posts").
    assert decision.action != "escalate" and not decision.resources
