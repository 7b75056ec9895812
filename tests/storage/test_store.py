"""Storage on a real SQLite file: idempotency, cases and locking, audit, cooldowns, deletion and retention."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from bot.community import update_config
from bot.engine import Post
from bot.pipeline import Pipeline
from bot.storage import CaseConflict, Store, channel_scope

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
RISKY = "Put the rapa cream right on the fresh surgical wound, it stops the scar"
G = "g1"


def post(text=RISKY, mid="m1", author="u1", channel="c1", created=T0, community=G) -> Post:
    return Post("discord", mid, channel, author, text, community_id=community, author_name="Member",
                created_at=created)


@pytest.fixture(autouse=True)
async def live(store, policy):
    """These tests are about a community that went live (new servers start in shadow mode)."""
    await update_config(store, policy, G, "owner", {"shadow_mode": "live"})


async def test_same_post_twice_gives_one_decision_and_one_note(store, policy):
    pipe = Pipeline(store, policy)
    first = await pipe.handle(post(), now=T0)
    assert first.reply == "note" and first.case_id
    await pipe.reply_sent(post(), first, "reply-1", now=T0)
    again = await pipe.handle(post(), now=T0)
    assert again.duplicate and again.reply is None
    # Even a fresh pipeline (a restart) over the same database does not reply again.
    restarted = await Pipeline(store, policy).handle(post(), now=T0)
    assert restarted.duplicate and restarted.reply is None
    assert await store.replies(first.post_id) == {"note": "reply-1"}


async def test_decision_is_stored_before_the_reply_with_versions(store, policy):
    out = await Pipeline(store, policy).handle(post(), now=T0)
    d = await store.decision(out.decision_id, community=G)
    assert d["policy_version"] == policy.version and d["model_version"] == "rules-only"
    assert d["detail"]["rules"][0]["spans"][0][2] == "rapa"
    events = [e["action"] for e in await store.audit_log(community=G)]
    assert "decision" in events and "case_opened" in events


async def test_claim_conflict_names_the_holder(store, policy):
    out = await Pipeline(store, policy).handle(post(), now=T0)
    await store.claim(out.case_id, "alice", community=G)
    with pytest.raises(CaseConflict) as err:
        await store.claim(out.case_id, "bob", community=G)
    assert err.value.holder == "alice" and "alice" in str(err.value)
    with pytest.raises(CaseConflict):
        await store.resolve(out.case_id, "bob", "dismissed", community=G, reason_code="false_positive")
    case = await store.resolve(out.case_id, "alice", "dismissed", community=G, reason_code="false_positive")
    assert case["status"] == "resolved" and case["resolution"] == "dismissed" and case["reason_code"] == "false_positive"
    with pytest.raises(CaseConflict):
        await store.claim(out.case_id, "alice", community=G)
    actions = [(e["actor"], e["action"]) for e in await store.audit_log(community=G, case_id=out.case_id)]
    assert ("alice", "claim") in actions and ("alice", "dismissed") in actions


async def test_audit_log_is_append_only(store):
    await store.audit("alice", "claim", community=G, case_id=1)
    before = await store.audit_log(community=G)
    # SQLite: IntegrityError from a RAISE(ABORT) trigger; PostgreSQL: the trigger function's exception.
    for sql in ("UPDATE audit SET actor='mallory'", "DELETE FROM audit"):
        with pytest.raises(Exception, match="append-only"):
            async with store.transaction():
                await store._exec(sql)
    assert await store.audit_log(community=G) == before and "alice" in [e["actor"] for e in before]


async def test_deleting_a_post_removes_its_text_everywhere_and_closes_the_case(store, policy, tmp_path):
    out = await Pipeline(store, policy).handle(post(), now=T0)
    await Pipeline(store, policy).handle_delete("discord", "m1", now=T0)
    case = await store.case(out.case_id, community=G)
    assert case["status"] == "resolved" and case["resolution"] == "deleted"
    assert case["text"] is None
    decision = await store.decision(out.decision_id, community=G)
    assert decision["action"] == "note_and_queue"  # the decision itself is kept for audit
    assert decision["detail"]["why"] == "[removed]"
    assert all(span[2] is None for rule in decision["detail"]["rules"] for span in rule["spans"])
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("caveat.db*"))
    assert b"fresh surgical wound" not in raw


async def test_forget_me_purges_only_that_members_text(store, policy):
    pipe = Pipeline(store, policy)
    a = await pipe.handle(post(mid="a", author="u1"), now=T0)
    b = await pipe.handle(post(mid="b", author="u2"), now=T0)
    assert await store.forget_user("u1", community=G) == 1
    assert (await store.post(a.post_id, community=G))["text"] is None
    assert (await store.post(b.post_id, community=G))["text"] == RISKY


async def test_retention_purge_drops_old_text_and_keeps_counts(store, policy):
    pipe = Pipeline(store, policy)
    old = await pipe.handle(post(mid="old", created=T0 - timedelta(days=100)), now=T0 - timedelta(days=100))
    new = await pipe.handle(post(mid="new", author="u2", created=T0), now=T0)
    assert await store.purge_retention(90, now=T0) == 1
    assert (await store.post(old.post_id, community=G))["text"] is None
    assert (await store.post(new.post_id, community=G))["text"] == RISKY
    counts = await store.daily_counts(community=G)
    assert sum(c["count"] for c in counts if c["label"] == "risky_self_treatment") == 2


async def test_cooldown_one_note_per_member_per_topic(store, policy):
    pipe = Pipeline(store, policy)
    first = await pipe.handle(post(mid="1"), now=T0)
    await pipe.reply_sent(post(mid="1"), first, "r1", now=T0)
    second = await pipe.handle(post(mid="2"), now=T0 + timedelta(hours=1))
    assert second.reply is None and "already got a note" in second.note_blocked
    later = await pipe.handle(post(mid="3"), now=T0 + timedelta(hours=25))
    assert later.reply == "note"


async def test_cooldown_caps_notes_per_channel(store, policy):
    pipe = Pipeline(store, policy)
    limit = policy.community.cooldowns.per_channel_notes
    for i in range(limit):
        out = await pipe.handle(post(mid=f"m{i}", author=f"u{i}"), now=T0)
        await pipe.reply_sent(post(mid=f"m{i}", author=f"u{i}"), out, f"r{i}", now=T0)
    capped = await pipe.handle(post(mid="extra", author="someone"), now=T0 + timedelta(minutes=1))
    assert capped.reply is None and "in this channel" in capped.note_blocked


async def test_shadow_channel_records_but_never_posts(store, policy):
    await store.set_setting(channel_scope(G, "c1"), "shadow_mode", True)
    out = await Pipeline(store, policy).handle(post(), now=T0)
    assert out.reply is None and out.note_blocked == "shadow mode"
    assert (await store.case(out.case_id, community=G))["kind"] == "shadow"


async def test_emergency_replies_even_in_shadow_mode_and_ignores_cooldowns(store, policy):
    await store.set_setting(channel_scope(G, "c1"), "shadow_mode", True)
    out = await Pipeline(store, policy).handle(post("I want to kill myself tonight"), now=T0)
    assert out.reply == "resources"
    assert (await store.case(out.case_id, community=G))["priority"] == 4


async def test_edit_updates_the_case_and_never_sends_a_second_note(store, policy):
    pipe = Pipeline(store, policy)
    first = await pipe.handle(post(), now=T0)
    await pipe.reply_sent(post(), first, "r1", now=T0)
    edited = await pipe.handle_edit(post("Put the rapa cream on the fresh surgical wound. DM me, I sell sirolimus"), now=T0)
    assert edited.reply is None
    case = await store.case(first.case_id, community=G)
    assert case["decision_id"] == edited.decision_id and "promotion" in case["labels"]


async def test_failed_reply_can_be_retried(store, policy):
    pipe = Pipeline(store, policy)
    out = await pipe.handle(post(), now=T0)
    await pipe.reply_failed(out, "HTTP 500")
    assert await store.claim_reply(out.post_id, "note")


async def test_queue_sorts_by_severity_then_age(store, policy):
    pipe = Pipeline(store, policy)
    await pipe.handle(post(mid="a"), now=T0)
    await pipe.handle(post("I want to kill myself tonight", mid="b", author="u2"), now=T0 + timedelta(minutes=5))
    cases = await store.cases(community=G, sort="severity")
    assert [c["message_id"] for c in cases] == ["b", "a"]
    assert [c["message_id"] for c in await store.cases(community=G, sort="oldest")] == ["a", "b"]


async def test_migrations_are_idempotent(database):
    from bot.storage.db import _migrations
    s1 = await Store.open(database)
    await s1.close()
    s2 = await Store.open(database)
    assert (await s2._one("SELECT COUNT(*) AS n FROM schema_migrations"))["n"] == len(_migrations())
    await s2.close()
