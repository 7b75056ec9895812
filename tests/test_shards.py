"""`caveat run --shards IDS --shard-count N`: which shards a process runs, and the errors that name the option."""
from __future__ import annotations

import argparse

import pytest

from bot.cli import main
from bot.client_args import parse_shards


@pytest.mark.parametrize("shards, count, expected", [
    (None, None, (None, None)),              # no options: one unsharded connection, as before
    ("2", 8, ([2], 8)),
    ("0-3", 8, ([0, 1, 2, 3], 8)),
    ("0,2,5", 8, ([0, 2, 5], 8)),
    (" 6-7, 1 ,1", 8, ([1, 6, 7], 8)),        # spaces and repeats are harmless
    (None, 4, ([0, 1, 2, 3], 4)),            # --shard-count alone: this process runs them all
])
def test_shard_ranges(shards, count, expected):
    assert parse_shards(shards, count) == expected


@pytest.mark.parametrize("shards, count, message", [
    ("8", 8, "--shards 8: shard id 8 is outside 0..7 (--shard-count 8)"),
    ("0-9", 8, "shard id 9 is outside 0..7"),
    ("2", None, "--shards 2 needs --shard-count"),
    (None, 0, "--shard-count must be at least 1"),
    ("1-x", 8, "--shards '1-x': expected shard ids like 2, 0-3 or 0,2,5"),
    ("-1", 8, "expected shard ids like"),
    ("", 8, "expected shard ids like"),
    ("3-1", 8, "the range 3-1 runs backwards"),
])
def test_bad_shards_are_refused_naming_the_option(shards, count, message):
    with pytest.raises(ValueError) as err:
        parse_shards(shards, count)
    assert message in str(err.value)


def test_caveat_run_refuses_a_shard_outside_the_count_before_anything_else(monkeypatch, capsys):
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)   # checked first: no token needed to learn the range is wrong
    assert main(["run", "--rules-only", "--shards", "0-8", "--shard-count", "8"]) == 2
    assert "caveat: --shards 0-8: shard id 8 is outside 0..7 (--shard-count 8)" in capsys.readouterr().err


def test_caveat_run_shard_count_must_be_a_number(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--shard-count", "many"])
    assert exit_.value.code == 2 and "--shard-count: invalid int value: 'many'" in capsys.readouterr().err


def test_the_bot_class_follows_the_options(policy):
    from bot.client import CaveatBot
    from bot.shards import ShardedCaveatBot, make_bot
    from policies.loader import PolicyHolder

    def bot(**options):
        return make_bot(argparse.Namespace(**options), store=None, policies=PolicyHolder(policy))
    plain = bot()
    assert type(plain) is CaveatBot and plain.shard_count is None
    sharded = bot(shards="1,3", shard_count=4)
    assert isinstance(sharded, ShardedCaveatBot) and isinstance(sharded, CaveatBot)
    assert sharded.shard_ids == [1, 3] and sharded.shard_count == 4
