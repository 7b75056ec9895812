"""After a note's review_by date: members see no unreviewed note, moderators get the post, the crisis lane still runs."""
from __future__ import annotations

from datetime import date

import pytest

from bot.engine import Engine, Post
from policies.loader import load_policy

EXPIRED = date(2027, 6, 1)  # every shipped note has review_by 2027-05-22
WOUND = "Put the rapa cream right on the fresh surgical wound, it stops the scar"
SELLER = "DM me, I sell sirolimus 1mg, no script needed"
CLAIM = "This tea cures diabetes, trust me"


def post(text: str, **kw) -> Post:
    return Post("test", "1", "c1", "u1", text, **kw)


@pytest.fixture(scope="module")
def expired():
    return Engine(load_policy(today=EXPIRED))


def test_policy_still_loads_the_day_after_every_note_expired():
    policy = load_policy(today=EXPIRED)
    assert not policy.notes and set(policy.withdrawn_notes) >= {"rapa-wounds", "buying-online", "exosomes"}
    assert policy.note("rapa-wounds") is None and policy.note("no-such-note") is None


def test_a_crisis_post_still_escalates_with_crisis_resources(expired):
    d = expired.assess(post("I want to kill myself tonight"))
    assert d.action == "escalate" and d.labels[0] == "emergency"
    assert d.resources and "988" in d.resources[0].contact
    assert d.withdrawn_note is None and "withdrawn" not in d.why


def test_rapamycin_on_a_wound_is_queued_for_moderators_instead_of_noted(expired):
    d = expired.assess(post(WOUND))
    assert d.action == "queue" and d.note is None and d.note_id is None
    assert d.withdrawn_note == "rapa-wounds" and d.to_dict()["withdrawn_note"] == "rapa-wounds"
    assert "Note 'rapa-wounds' was withdrawn (past its review date 2027-05-22)" in d.why
    assert d.topic == "sirolimus-wound-healing"  # cooldowns and stats still know what the post is about


@pytest.mark.parametrize("text,before", [(SELLER, "note_and_queue"), (CLAIM, "note")])
def test_note_actions_become_queue(policy, expired, text, before):
    assert Engine(policy).assess(post(text)).action == before
    d = expired.assess(post(text))
    assert d.action == "queue" and d.note is None and "withdrawn" in d.why


def test_only_the_expired_note_is_withheld(policy_dir):
    path = policy_dir / "notes" / "rapamycin.yaml"
    text = path.read_text()
    path.write_text(text.replace("review_by: 2027-05-22", "review_by: 2026-12-01", 1))  # rapa-wounds only
    engine = Engine(load_policy(policy_dir, today=date(2026, 12, 7)))
    assert engine.assess(post(WOUND)).action == "queue"
    seller = engine.assess(post(SELLER))
    assert seller.action == "note_and_queue" and seller.note_id == "buying-online"


def test_a_note_expiring_while_the_bot_runs_is_withheld_without_a_reload(policy_dir):
    """A bot runs for weeks on one loaded policy: a note expiring meanwhile must stop being shown."""
    path = policy_dir / "notes" / "rapamycin.yaml"
    path.write_text(path.read_text().replace("review_by: 2027-05-22", "review_by: 2026-12-06", 1))
    policy = load_policy(policy_dir, today=date(2026, 12, 1))  # loaded before it expired
    assert "rapa-wounds" in policy.notes and any("expires in 5 days" in w for w in policy.warnings)
    assert date.today() > date(2026, 12, 6)
    d = Engine(policy).assess(post(WOUND))
    assert d.action == "queue" and d.withdrawn_note == "rapa-wounds" and "2026-12-06" in d.why


def test_the_stored_decision_record_is_unchanged_when_no_note_is_withdrawn(policy):
    d = Engine(policy).assess(post(WOUND))
    assert d.withdrawn_note is None and "withdrawn_note" not in d.to_dict()
