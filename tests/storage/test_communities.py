"""Each community's data stays its own; one transaction per post keeps notes and cooldowns right under
concurrency; replayed history never acts; new servers start in shadow mode; threads inherit settings."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from bot.cases import CaseService, NotAllowed, proposed_note
from bot.community import SettingError, load_config, set_channel_shadow, update_config
from bot.engine import Post
from bot.pipeline import Pipeline
from bot.storage import CaseNotFound

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
RISKY = "Put the rapa cream right on the fresh surgical wound, it stops the scar"
CRISIS = "I want to kill myself tonight"
SELLER = "DM me, I sell sirolimus, cheaper than any pharmacy"


def post(text=RISKY, mid="m1", author="u1", channel="c1", community="g1") -> Post:
    return Post("discord", mid, channel, author, text, community_id=community, author_name="Member", created_at=T0)


async def go_live(store, policy, *communities):
    for c in communities:
        await update_config(store, policy, c, "owner", {"shadow_mode": "live"})


async def test_a_new_server_starts_in_shadow_mode(store, policy):
    assert (await load_config(store, policy, "new-guild")).shadow_mode is True
    out = await Pipeline(store, policy).handle(post(community="new-guild"), now=T0)
    assert out.reply is None and out.note_blocked == "shadow mode"
    crisis = await Pipeline(store, policy).handle(post(CRISIS, mid="c", community="new-guild"), now=T0)
    assert crisis.reply == "resources"  # the emergency lane ignores shadow mode


async def test_one_community_never_sees_anothers_cases_stats_or_audit(store, policy):
    await go_live(store, policy, "g1", "g2")
    pipe = Pipeline(store, policy)
    mine = await pipe.handle(post(mid="a", community="g1"), now=T0)
    theirs = await pipe.handle(post(CRISIS, mid="b", author="u9", community="g2"), now=T0)
    with pytest.raises(CaseNotFound):
        await store.case(theirs.case_id, community="g1")
    assert [c["id"] for c in await store.cases(community="g1", status=None)] == [mine.case_id]
    assert await store.count_cases(community="g1") == 1
    assert set((await store.stats(community="g1"))["cases_by_label"]) == {"risky_self_treatment"}
    assert {e["post_id"] for e in await store.audit_log(community="g1") if e["post_id"]} == {mine.post_id}
    assert {c["label"] for c in await store.daily_counts(community="g1")} == {"risky_self_treatment"}
    assert await store.decision(theirs.decision_id, community="g1") is None
    assert await store.post(theirs.post_id, community="g1") is None
    with pytest.raises(CaseNotFound):
        await store.claim(theirs.case_id, "alice", community="g1")


async def test_cooldowns_and_forget_me_are_per_community(store, policy):
    await go_live(store, policy, "g1", "g2")
    pipe = Pipeline(store, policy)
    first = await pipe.handle(post(mid="a", community="g1"), now=T0)
    other = await pipe.handle(post(mid="b", community="g2"), now=T0)
    assert first.reply == "note" and other.reply == "note"
    assert await store.forget_user("u1", community="g1") == 1
    assert (await store.post(other.post_id, community="g2"))["text"] == RISKY


async def test_concurrent_posts_by_one_member_on_one_topic_draw_one_note(store, policy):
    await go_live(store, policy, "g1")
    pipe = Pipeline(store, policy)
    outs = await asyncio.gather(*(pipe.handle(post(mid=f"m{i}"), now=T0) for i in range(3)))
    assert sum(o.reply == "note" for o in outs) == 1
    assert sum(1 for o in outs if o.note_blocked and "already got a note" in o.note_blocked) == 2


async def test_concurrent_posts_in_a_capped_channel_draw_at_most_the_cap(store, policy):
    await go_live(store, policy, "g1")
    pipe = Pipeline(store, policy)
    cap = policy.community.cooldowns.per_channel_notes
    outs = await asyncio.gather(*(pipe.handle(post(mid=f"m{i}", author=f"u{i}"), now=T0) for i in range(cap + 3)))
    assert sum(o.reply == "note" for o in outs) == cap


async def test_the_same_message_delivered_twice_at_once_is_decided_once(store, policy):
    await go_live(store, policy, "g1")
    pipe = Pipeline(store, policy)
    outs = await asyncio.gather(*(pipe.handle(post(), now=T0) for _ in range(4)))
    assert sum(not o.duplicate for o in outs) == 1 and sum(o.reply == "note" for o in outs) == 1
    assert (await store._one("SELECT COUNT(*) AS n FROM decisions"))["n"] == 1


async def test_a_failure_mid_post_stores_nothing_and_a_retry_works(store, policy, monkeypatch):
    await go_live(store, policy, "g1")
    pipe = Pipeline(store, policy)
    real = store.open_case

    async def broken(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(store, "open_case", broken)
    with pytest.raises(RuntimeError):
        await pipe.handle(post(), now=T0)
    assert (await store._one("SELECT COUNT(*) AS n FROM posts"))["n"] == 0
    monkeypatch.setattr(store, "open_case", real)
    out = await pipe.handle(post(), now=T0)
    assert out.reply == "note" and out.case_id


async def test_a_failed_note_gives_its_cooldown_back(store, policy):
    await go_live(store, policy, "g1")
    pipe = Pipeline(store, policy)
    out = await pipe.handle(post(mid="a"), now=T0)
    await pipe.reply_failed(out, "HTTP 403")
    again = await pipe.handle(post(mid="b"), now=T0 + timedelta(minutes=1))
    assert again.reply == "note"


async def test_a_thread_inherits_its_parent_channel_and_can_override_it(store, policy):
    await go_live(store, policy, "g1")
    await set_channel_shadow(store, "g1", "forum", True, "mod")
    pipe = Pipeline(store, policy)
    in_forum = await pipe.handle(post(mid="t1", channel="thread1"), parents=("forum",), now=T0)
    assert in_forum.shadow and in_forum.reply is None
    await set_channel_shadow(store, "g1", "thread2", False, "mod")
    own = await pipe.handle(post(mid="t2", author="u2", channel="thread2"), parents=("forum",), now=T0)
    assert not own.shadow and own.reply == "note"


async def test_replayed_history_never_replies_and_stays_out_of_the_queue(store, policy):
    await go_live(store, policy, "g1")
    pipe = Pipeline(store, policy)
    crisis = await pipe.handle(post(CRISIS, mid="r1"), replayed=True, now=T0)
    risky = await pipe.handle(post(mid="r2"), replayed=True, now=T0)
    assert crisis.reply is None and risky.reply is None and await store.replies(crisis.post_id) == {}
    assert (await store.case(crisis.case_id, community="g1"))["kind"] == "replay"
    assert await store.cases(community="g1") == [] and await store.count_cases(community="g1") == 0
    assert len(await store.cases(community="g1", include_replayed=True)) == 2
    assert (await store.stats(community="g1"))["cases_by_label"] == {}
    service = CaseService(store, lambda: policy)
    with pytest.raises(Exception, match="replayed history"):
        await service.send_note("g1", risky.case_id, "alice")
    assert await service.clear_replayed("g1", "alice") == 2
    assert await store.cases(community="g1", include_replayed=True) == []


async def test_one_note_chooser_never_offers_a_caution_note_for_a_crisis(store, policy):
    await go_live(store, policy, "g1")
    pipe = Pipeline(store, policy)
    mixed = "I want to kill myself tonight. my rapa cream on the fresh surgical wound did nothing"
    out = await pipe.handle(post(mixed), now=T0)
    case = await store.case(out.case_id, community="g1")
    assert case["label"] == "emergency" and proposed_note(policy, case) is None
    seller = await pipe.handle(post(SELLER, mid="s", author="u5"), now=T0)
    seller_case = await store.case(seller.case_id, community="g1")
    note = proposed_note(policy, seller_case)
    assert seller_case["label"] == "promotion"
    assert note is not None and note.id in (seller_case["note_id"], policy.labels["promotion"].default_note)


async def test_send_note_reserves_the_reply_and_cooldown_and_queues_it_for_the_platform(store, policy):
    await update_config(store, policy, "g1", "owner", {"shadow_mode": "shadow"})
    pipe = Pipeline(store, policy)
    out = await pipe.handle(post(), now=T0)  # shadow: a case, no note
    service = CaseService(store, lambda: policy)
    result = await service.send_note("g1", out.case_id, "alice", now=T0)
    assert result.case["resolution"] == "sent_note" and len(result.actions) == 2
    actions = await store.take_actions("discord", now=T0)
    assert [a["kind"] for a in actions] == ["post_note", "refresh_card"]
    assert (await store._one("SELECT COUNT(*) AS n FROM cooldowns WHERE community_id='g1'"))["n"] == 1
    assert await store.take_actions("discord", now=T0) == []  # taken once
    other = await pipe.handle(post(mid="x"), now=T0)
    with pytest.raises(Exception, match="already resolved|already sent"):
        await service.send_note("g1", out.case_id, "bob", now=T0)
    assert other.case_id != out.case_id


async def test_only_the_author_can_dispute_a_note(store, policy):
    await go_live(store, policy, "g1")
    out = await Pipeline(store, policy).handle(post(), now=T0)
    service = CaseService(store, lambda: policy)
    with pytest.raises(NotAllowed):
        await service.dispute("g1", out.decision_id, "someone-else", "this is not fair at all")
    with pytest.raises(CaseNotFound):
        await service.dispute("g2", out.decision_id, "u1", "this is not fair at all")
    result = await service.dispute("g1", out.decision_id, "u1", "this is not fair at all")
    assert result.case["kind"] == "dispute" and await store.dispute_reason(out.decision_id) == "this is not fair at all"


async def test_settings_are_validated_and_nothing_is_stored_when_one_is_wrong(store, policy):
    with pytest.raises(SettingError, match="locale must be one of"):
        await update_config(store, policy, "g1", "owner", {"mod_channel_id": "123", "locale": "xx-XX"})
    config = await load_config(store, policy, "g1")
    assert config.mod_channel_id is None and config.locale == policy.community.default_locale
    config = await update_config(store, policy, "g1", "owner", {"mod_channel_id": "<#123>", "locale": "en-GB",
                                                                "realert_minutes": 5})
    assert (config.mod_channel_id, config.locale, config.realert_minutes) == ("123", "en-GB", 5.0)
    assert (await load_config(store, policy, "g2")).mod_channel_id is None


async def test_login_links_work_once_and_revocation_ends_sessions_at_once(store):
    token = await store.create_login_link("g1", "42", "alice", now=T0)
    link = await store.use_login_link(token, now=T0 + timedelta(minutes=1))
    assert link["moderator_id"] == "42" and link["community_id"] == "g1"
    assert await store.use_login_link(token, now=T0 + timedelta(minutes=2)) is None
    late = await store.create_login_link("g1", "42", "alice", now=T0)
    assert await store.use_login_link(late, now=T0 + timedelta(hours=1)) is None
    sid, _ = await store.create_web_session(moderator_id="42", moderator="alice", community="g1", role="moderator")
    assert (await store.web_session(sid))["community_id"] == "g1"
    assert await store.revoke_moderator_sessions("g1", "42") == 1
    assert await store.web_session(sid) is None
    raw = (await store._one("SELECT * FROM login_links LIMIT 1"))
    assert token not in dict(raw).values()  # only hashes are stored
