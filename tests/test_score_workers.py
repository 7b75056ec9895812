"""Scoring in worker processes (`--score-workers N`): same decisions as in-process, nothing lost when a worker dies.

The workers are real processes (spawn) with the real int8 model; worker deaths are real (SIGKILL, os._exit).
The hooks below run inside the workers (they are pickled by reference, so they live at module level)."""
from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from bot import metrics
from bot.engine import Post
from bot.pipeline import Pipeline
from bot.score_workers import ScoreWorkers, WorkerUnavailable, worker_count
from classifiers.normalize import clean_text
from classifiers.rules import MAX_ASSESSED_CHARS
from policies.loader import PolicyHolder, load_policy

# Written in-house for tests; no real member's post.
TEXTS = [
    "Put the rapa cream right on the fresh surgical wound, it stops the scar",
    "Don't put rapamycin on a fresh surgical wound, it slows healing",
    "DM me, I sell sirolimus, no script needed",
    "the pills are lined up for tonight and I'm done",
    "these exosomes regrow hair 100%, guaranteed",
    "anyone watching the match tonight?",
    "my dermatologist said metformin is fine with my other meds, just take it with food",
    "stop the chemo, turmeric cured my cousin in two weeks",
    "r4pamycin 0n op3n w0unds w0rks gr3at",
    "thanks everyone, the appointment went well \ud800",          # lone surrogate
    "I read the trial. " * 150 + "Put the rapa cream on the fresh wound.",     # long: assessed off the loop
    "ok " * (MAX_ASSESSED_CHARS // 3 + 50) + " the pills are lined up for tonight",  # past the cap: truncated
]
POISON = "POISON-PILL 4e1f"   # a worker that reads this dies (see _die_on_poison)
SECRET = "SECRET-TEXT-91b7"   # a worker's model raises with this in its message (see _model_raises)


def _post(i: int, text: str, community: str = "g1") -> Post:
    return Post("discord", f"m{i}", "c1", f"u{i % 7}", text, community_id=community)


# -- hooks run inside the workers ------------------------------------------------------------------------------

def _slow(state):
    """Each prediction takes at least 30 ms, so posts are in flight when a worker is killed."""
    predict = state.predict

    def slow(texts):
        time.sleep(0.03)
        return predict(texts)
    state.predict = slow


def _very_slow(state):
    predict = state.predict

    def slow(texts):
        time.sleep(0.4)
        return predict(texts)
    state.predict = slow


def _die_on_poison(state):
    """The worker dies (as a native crash would) on a post with POISON in it."""
    predict = state.predict

    def dying(texts):
        if any(POISON.lower() in t.lower() for t in texts):
            os._exit(13)
        return predict(texts)
    state.predict = dying


def _hang_on_poison(state):
    predict = state.predict

    def hanging(texts):
        if any(POISON.lower() in t.lower() for t in texts):
            time.sleep(3600)
        return predict(texts)
    state.predict = hanging


def _model_raises(state):
    def raising(texts):
        raise ValueError(f"cannot score {texts!r}")
    state.predict = raising


def _check_worker_env(state):
    """The pool refuses to start unless each worker is offline and on one thread."""
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert os.environ["CAVEAT_THREADS"] == "1" and os.environ["OMP_NUM_THREADS"] == "1"
    assert state.model is not None and getattr(state.model, "threads", 1) == 1


# -- fixtures ---------------------------------------------------------------------------------------------------

@pytest.fixture
def runner():
    """The in-process scorer (what `caveat run` loads first)."""
    from classifiers.runner import ModelRunner
    from classifiers.serving import get_scorer
    r = ModelRunner(get_scorer())
    yield r
    r._pool.shutdown(wait=False, cancel_futures=True)


@pytest.fixture(scope="module")
def pool():
    """Two workers with the real model, shared by the tests that do not kill anything."""
    from classifiers.serving import get_scorer
    p = ScoreWorkers(2, version=get_scorer().version).start()
    yield p
    p.close()


def _new_pool(n: int = 2, **kw) -> ScoreWorkers:
    from classifiers.serving import get_scorer
    return ScoreWorkers(n, version=get_scorer().version, **kw).start()


# -- same decisions ---------------------------------------------------------------------------------------------

async def test_workers_decide_exactly_like_the_bot_process(pool, runner, policy):
    here, there = Pipeline(None, policy, runner), Pipeline(None, policy, runner, workers=pool)
    posts = [_post(i, t) for i, t in enumerate(TEXTS)]
    local = [await here.decide(p) for p in posts]
    remote = await asyncio.gather(*(there.decide(p) for p in posts))
    assert any(d.labels for d in local) and any(not d.labels for d in local)
    for a, b in zip(local, remote):
        assert b.labels == a.labels and b.action == a.action and b.note_id == a.note_id and b.mode == a.mode == "model"
        assert b.scores == pytest.approx(a.scores, abs=1e-6)
        assert b.model_scores == pytest.approx(a.model_scores, abs=1e-6)
        assert b.policy_version == a.policy_version == policy.version
        assert b.model_version == a.model_version == runner.version
        assert b.why == a.why and b.resources == a.resources
    assert "characters long" in remote[-1].why  # the truncation notice is added in the worker too
    assert pool.stats["deaths"] == 0


async def test_bulk_scores_from_workers_equal_the_bot_processs(pool, runner, policy):
    from bot.engine import Engine
    engine = Engine(policy)
    inputs = [engine.model_input(clean_text(t)) for t in TEXTS * 3]
    assert await pool.score_many(inputs, chunk=4) == await runner.score_many(inputs)


async def test_a_reloaded_policy_is_used_by_every_worker_from_the_next_post(policy_dir, pool, runner):
    holder = PolicyHolder(load_policy(policy_dir))
    here = Pipeline(None, holder.current, runner)
    there = Pipeline(None, holder.current, runner, workers=pool)
    posts = [_post(i, TEXTS[0]) for i in range(8)]   # 8 posts at once: both workers take some
    before = await asyncio.gather(*(there.decide(p) for p in posts))
    assert {d.policy_version for d in before} == {holder.current.version}
    assert {d.thresholds["risky_self_treatment"]["note"] for d in before} == {0.767659}

    path = policy_dir / "thresholds.yaml"
    path.write_text(path.read_text().replace("value: 0.767659", "value: 0.95", 1))
    new = holder.reload()   # what `/caveat policy reload` does, then pipeline.set_policy
    here.set_policy(new)
    there.set_policy(new)
    assert new.version != before[0].policy_version
    after = await asyncio.gather(*(there.decide(p) for p in posts))
    assert {d.policy_version for d in after} == {new.version}
    assert {d.thresholds["risky_self_treatment"]["note"] for d in after} == {0.95}
    expected = await here.decide(posts[0])
    assert all(d.labels == expected.labels and d.action == expected.action for d in after)


# -- worker death -----------------------------------------------------------------------------------------------

async def test_a_killed_worker_loses_no_post_and_none_is_stored_twice(store, policy, runner):
    workers = _new_pool(2, hook=_slow)
    try:
        pipeline = Pipeline(store, policy, runner, workers=workers)
        posts = [_post(i, f"{TEXTS[i % 9]} ({i})") for i in range(40)]
        tasks = [asyncio.create_task(pipeline.handle(p, shadow=True)) for p in posts]
        while sum(t.done() for t in tasks) < 4:   # scoring has started: each worker holds a post
            await asyncio.sleep(0.01)
        victim = workers.pids()[0]
        os.kill(victim, signal.SIGKILL)
        outcomes = await asyncio.wait_for(asyncio.gather(*tasks), 120)

        assert workers.stats["deaths"] >= 1 and workers.stats["retries"] >= 1  # a post was in its hands
        assert victim not in workers.pids() and len(workers.pids()) == 2       # and it was replaced
        assert all(o.decision is not None and not o.duplicate for o in outcomes)
        assert {o.decision.model_version for o in outcomes} == {runner.version}
        stored = await store.audit_log(community="g1", action="decision", limit=1000)
        assert sorted(e["post_id"] for e in stored) == sorted(o.post_id for o in outcomes)  # once each
        for p in posts:
            row = await store.post_by_message("discord", p.message_id)
            assert (await store.latest_decision(row["id"])) is not None
        # after the rebuild the pool still scores like the bot's own process
        again = await pipeline.decide(_post(99, TEXTS[0]))
        assert again == await Pipeline(None, policy, runner).decide(_post(99, TEXTS[0]))
    finally:
        await workers.aclose()


@pytest.mark.parametrize("hook", [_die_on_poison, _hang_on_poison], ids=["dies", "hangs"])
async def test_a_post_that_kills_its_workers_is_decided_in_the_bot_process(store, policy, runner, hook):
    workers = _new_pool(2, hook=hook, max_failures=2, timeout_s=1.5)
    try:
        pipeline = Pipeline(store, policy, runner, workers=workers)
        fallbacks = metrics.WORKER_FALLBACKS.value()
        poison = _post(0, f"{TEXTS[3]} {POISON}")
        others = [_post(i, TEXTS[i % 9]) for i in range(1, 11)]
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(pipeline.handle(p, shadow=True) for p in [poison, *others])), 120)
        assert all(o.decision is not None for o in outcomes)
        assert workers.stats["deaths"] == 2 and workers.stats["retries"] == 1
        assert metrics.WORKER_FALLBACKS.value() == fallbacks + 1
        local = await Pipeline(None, policy, runner).decide(poison)
        assert outcomes[0].decision.labels == local.labels and outcomes[0].decision.action == local.action == "escalate"
        assert outcomes[0].decision.model_version == runner.version
        assert len(workers.pids()) == 2
    finally:
        await workers.aclose()


async def test_a_flood_that_outwaits_the_deadline_is_decided_by_rules_with_review(policy, runner):
    """As when the model times out in-process: past `deadline_s` a post is decided by rules (queued if a rule hit)."""
    workers = _new_pool(1, hook=_very_slow, deadline_s=1.0)
    try:
        fallbacks = metrics.MODEL_FALLBACKS.value()
        pipeline = Pipeline(None, policy, runner, workers=workers)
        decisions = await asyncio.gather(*(pipeline.decide(_post(i, TEXTS[0])) for i in range(6)))
        modes = [d.mode for d in decisions]
        assert modes[0] == "model" and modes[-1] == "fallback"
        assert metrics.MODEL_FALLBACKS.value() == fallbacks + modes.count("fallback")
        assert all(d.action != "none" and d.model_version == runner.version for d in decisions)
        assert workers.stats["deaths"] == 0
    finally:
        await workers.aclose()


async def test_a_closed_pool_hands_posts_back(policy, runner):
    workers = _new_pool(1)
    await workers.aclose()
    assert workers.pids() == []
    with pytest.raises(WorkerUnavailable):
        await workers.decide(_post(1, TEXTS[0]), policy)
    d = await Pipeline(None, policy, runner, workers=workers).decide(_post(1, TEXTS[0]))  # scored here instead
    assert d.model_version == runner.version and d.labels


# -- settings ---------------------------------------------------------------------------------------------------

def test_workers_are_offline_and_single_threaded_whatever_the_bot_says(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("CAVEAT_THREADS", "4")
    workers = _new_pool(1, hook=_check_worker_env)   # the hook's assertions fail the start otherwise
    workers.close()


def test_a_worker_that_cannot_start_stops_the_pool_from_starting():
    with pytest.raises(RuntimeError, match="loaded model"):
        ScoreWorkers(1, version="some-other-model").start()


async def test_a_model_failure_in_a_worker_falls_back_to_rules_and_never_logs_the_text(policy, runner, capfd):
    workers = _new_pool(1, hook=_model_raises)
    try:
        fallbacks = metrics.MODEL_FALLBACKS.value()
        d = await Pipeline(None, policy, runner, workers=workers).decide(_post(1, f"{TEXTS[3]} {SECRET}"))
        assert d.mode == "fallback" and d.action == "escalate"
        assert metrics.MODEL_FALLBACKS.value() == fallbacks + 1
    finally:
        await workers.aclose()
    out, err = capfd.readouterr()
    assert "model scoring failed for post discord:m1" in err and "ValueError" in err
    assert SECRET.lower() not in (out + err).lower()


async def test_rules_only_workers_decide_like_rules_only_in_process(policy):
    workers = ScoreWorkers(2, rules_only=True).start()
    try:
        assert workers.version == "rules-only"
        for i, text in enumerate(TEXTS[:9]):
            post = _post(i, text)
            assert (await workers.decide(post, policy))[0] == await Pipeline(None, policy).decide(post)
    finally:
        workers.close()


def test_score_workers_option():
    import argparse

    from bot.cli import build_parser
    assert build_parser().parse_args(["run", "--score-workers", "3"]).score_workers == 3
    assert build_parser().parse_args(["run"]).score_workers == 0
    assert build_parser().parse_args(["replay", "x.jsonl", "--score-workers", "2"]).score_workers == 2
    for bad in ("-1", "two"):
        with pytest.raises(argparse.ArgumentTypeError):
            worker_count(bad)


async def test_replay_with_workers_stores_what_replay_without_them_does(tmp_path, capsys):
    import json

    from bot.cli import main
    from bot.storage import Store
    export = tmp_path / "history.jsonl"
    export.write_text("".join(json.dumps({"id": i, "text": t, "author": f"u{i}"}) + "\n"
                              for i, t in enumerate(TEXTS * 4)))
    outputs, decisions = [], []
    for n, db in ((0, tmp_path / "a.db"), (2, tmp_path / "b.db")):
        code = await asyncio.to_thread(main, ["replay", str(export), "--db", str(db), "--no-progress",
                                              "--score-workers", str(n)])
        assert code == 0
        outputs.append(capsys.readouterr().out.split("\n\nDecisions stored")[0])
        store = await Store.open(db)
        try:
            rows = []
            for i in range(len(TEXTS) * 4):
                post = await store.post_by_message("replay", str(i))
                d = await store.latest_decision(post["id"])
                rows.append((d["action"], d["labels"], d["policy_version"], d["model_version"]))
            decisions.append(rows)
        finally:
            await store.close()
    assert outputs[0] == outputs[1] and decisions[0] == decisions[1]
