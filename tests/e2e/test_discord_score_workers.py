"""`--score-workers` end to end: posts scored in worker processes get the same replies; killing a worker while
posts are in flight loses none and sends no second reply. (Rules-only workers: the e2e bot runs without the model.)"""
from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from bot.score_workers import ScoreWorkers

RISKY = "Put the rapa cream right on the fresh surgical wound, it stops the scar"
CRISIS = "I want to kill myself tonight"
CHAT = "anyone watching the match tonight?"


def _slow(state):
    """Runs in each worker: every assessment takes at least 50 ms, so posts are in flight when one is killed."""
    decide = state.decide

    def slow(engine, post):
        time.sleep(0.05)
        return decide(engine, post)
    state.decide = slow


def replies_to(fake, message):
    return [r for r in fake.find("POST", rf"^/channels/{message['channel_id']}/messages$")
            if str((r.json.get("message_reference") or {}).get("message_id")) == message["id"]]


@pytest.fixture
def workers():
    pool = ScoreWorkers(2, rules_only=True, hook=_slow).start()
    yield pool
    pool.close()


async def test_posts_scored_in_workers_survive_a_killed_worker(harness, fake, workers):
    bot = harness.bot
    bot.pipeline.workers = workers   # what `caveat run --score-workers 2` gives the bot's pipeline
    msg, outcome = await harness.post(CRISIS)
    assert outcome.decision.action == "escalate" and len(replies_to(fake, msg)) == 1

    texts = [RISKY if i % 4 == 0 else f"{CHAT} ({i})" for i in range(24)]
    ids = [fake.snowflake() for _ in texts]
    waiters = [asyncio.ensure_future(bot.wait_for("caveat_post_handled", check=lambda mid, _, i=int(i): mid == i,
                                                  timeout=60)) for i in ids]
    messages = [await fake.send_message(t, message_id=i) for t, i in zip(texts, ids)]
    while sum(w.done() for w in waiters) < 3:
        await asyncio.sleep(0.01)
    os.kill(workers.pids()[0], signal.SIGKILL)
    outcomes = [o for _, o in await asyncio.gather(*waiters)]

    assert workers.stats["deaths"] >= 1 and workers.stats["retries"] >= 1 and len(workers.pids()) == 2
    assert all(o.decision is not None for o in outcomes)
    for message, text, o in zip(messages, texts, outcomes):
        assert await harness.store.latest_decision(o.post_id) is not None
        # one reply at most per post (notes also respect cooldowns), and none for chat
        assert len(replies_to(fake, message)) <= 1
        if text != RISKY:
            assert not replies_to(fake, message) and o.decision.action == "none"
    assert sum(len(replies_to(fake, m)) for m in messages) >= 1


def test_caveat_run_starts_its_score_workers_and_stops_them(monkeypatch, capsys, tmp_path):
    import socket

    from discord.http import Route

    from bot.cli import main
    pools = []
    real_close = ScoreWorkers.close

    def close(self, timeout=10.0):
        pools.append((self.n, self.version, len(self.pids())))
        real_close(self, timeout)
    monkeypatch.setattr(ScoreWorkers, "close", close)
    with socket.socket() as s:   # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(Route, "BASE", f"http://127.0.0.1:{port}/api/v10")
    monkeypatch.setenv("DISCORD_TOKEN", "x")
    monkeypatch.setenv("CAVEAT_DB", str(tmp_path / "caveat.db"))
    assert main(["run", "--rules-only", "--score-workers", "2"]) == 1
    assert "cannot reach Discord" in capsys.readouterr().err
    assert pools == [(2, "rules-only", 2)]   # both were running until the bot stopped them
