"""Proof for issue 20: two `caveat run` processes, one database, one fake Discord, a flood of 1,000 posts.

Four servers, two on each of two shards; process A runs shard 0 and process B shard 1 (real subprocesses). The flood
mixes benign posts, warnings, risky posts (caution note + case), sellers (note + case), queue-only posts and crises
(crisis reply + on-call alert), from members who post again and again, some in every server. On the way:

- duplicates: 5% of the posts are delivered twice back to back (the same MESSAGE_CREATE), 40 old posts are delivered
  again after the flood, and B is told to reconnect (op 7) and RESUMEs, getting 25 events it already had replayed;
- a restart: a second process A2 (the same command line as A) starts on shard 0 mid-flood, so for a while every
  shard-0 post reaches two processes at once (Discord gives a shard's events to every session on it), then A is
  killed with SIGKILL while both are busy. A2 is started before A dies because Discord delivers nothing to a shard
  that has no session and Caveat has no catch-up of missed posts: a shard with no process loses its posts.

Checked from the database (through `Ledger`, i.e. Store methods) and from what the fake Discord was sent: every post
stored and decided exactly once, at most one caution note and one crisis reply per post and one card per case,
the database's reply ids matching what Discord got, notes within the cooldowns (one per member and topic per server,
three per channel per 10 minutes) although the same member's posts were handled by different processes, no error in
the surviving processes' logs, and nothing lost to the kill: what A had reserved in a committed transaction but not
posted (a crisis reply, a note, a case card) is posted by A2 once A has been silent for `--takeover-after` seconds,
and what A posted but could not record is not posted twice (the sends' nonces).
"""
from __future__ import annotations

import asyncio
import random
import re
import warnings
from collections import Counter, defaultdict

from bot_process import BotProcess, go_live
from fake_discord import User, shard_of
from ledger import Ledger

FLOOD = 1000
SEED = 20
TEXTS = [  # (text, weight, note topic or None, crisis?) — written in-house, no real posts
    ("Does anyone have a good recipe for a low-salt soup?", 40, None, False),
    ("My dermatologist says sunscreen every morning, even in winter", 15, None, False),
    ("Don't put rapamycin on a fresh surgical wound, it slows healing", 10, None, False),
    ("Put the rapa cream right on the fresh surgical wound, it stops the scar", 12, "rapa-wounds", False),
    ("DM me, I sell sirolimus 1mg, no script needed", 8, "buying-online", False),
    ("I am going to stop my meds cold turkey", 8, None, False),
    ("I want to kill myself tonight", 7, None, True),
]
#: A dead process's reservations are taken over (`caveat run --takeover-after`, cogs/outbox.py): the kill must lose
#: nothing at all.
KILL_LOSES_NOTHING = True
TAKEOVER_AFTER = 2.0


def bot_posts(fake) -> list:
    """Every message the bots posted successfully, with the token of the process that posted it."""
    return [r for r in fake.find("POST", r"^/channels/\d+/messages$") if r.status == 200]


def delivered(session) -> Counter:
    """How many times each member's post was sent to a gateway session (duplicates and replays included)."""
    return Counter(d["id"] for _, t, d in session.log if t == "MESSAGE_CREATE" and not d["author"].get("bot"))


async def settle(fake, *, quiet: float = 2.0, timeout: float = 60) -> None:
    """Wait until the bots have made no REST call for `quiet` seconds."""
    loop = asyncio.get_running_loop()
    deadline, seen, since = loop.time() + timeout, -1, loop.time()
    while loop.time() < deadline:
        if len(fake.requests) != seen:
            seen, since = len(fake.requests), loop.time()
        elif loop.time() - since >= quiet:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("the bots kept calling Discord")


async def test_two_processes_1000_posts_duplicates_and_a_kill(fake, database, policy, tmp_path):
    rng = random.Random(SEED)
    g3 = fake.add_guild("Longevity Lab", shard=(0, 2), members=6)
    g4 = fake.add_guild("Hair and Skin", shard=(1, 2), members=6)
    guilds = [fake.g1, fake.g2, g3, g4]
    travellers = [User(fake.snowflake(), f"traveller-{i}") for i in range(2)]   # members of every server
    authors = {g.id: [u for u in g.users if not u.bot and u is not g.owner and u.permissions_in(g.id) & (1 << 13) == 0]
               + travellers for g in guilds}
    assert {shard_of(g.id, 2) for g in (fake.g1, g3)} == {0} and {shard_of(g.id, 2) for g in (fake.g2, g4)} == {1}
    await go_live(database, policy, guilds)

    def process(name, shard, *extra):
        return BotProcess(fake, name, database, ["--shards", str(shard), "--shard-count", "2",
                                                 "--takeover-after", str(TAKEOVER_AFTER), *extra], tmp_path)
    a, a2, b = process("A", 0), process("A2", 0, "--no-sync"), process("B", 1, "--no-sync")
    await asyncio.gather(a.start([(0, 2)]), b.start([(1, 2)]))
    sent: list[tuple[dict, tuple]] = []
    message: dict[str, dict] = {}
    communities = [g.id for g in guilds]
    texts, weights = list(TEXTS), [t[1] for t in TEXTS]
    a2_ready = drained = None
    killed_at, killed_time = None, 0.0
    try:
        async with Ledger(database) as ledger:
            async def decided(ids):
                async def done(ledger):
                    nonlocal ids
                    ids = await ledger.undecided(ids)
                    return not ids
                return await ledger.wait_until(done, timeout=60, every=0.3)

            for i in range(FLOOD):
                guild = rng.choice(guilds)
                kind = rng.choices(texts, weights)[0]
                msg = await fake.send_message(kind[0], author=rng.choice(authors[guild.id]),
                                              channel=rng.choice([guild.general, guild.thread]))
                sent.append((msg, kind))
                message[msg["id"]] = msg
                if rng.random() < 0.05:
                    await fake.dispatch("MESSAGE_CREATE", msg)                 # the same event delivered twice
                if i == 250:
                    a2_ready = asyncio.create_task(a2.start([(0, 2)]))        # the replacement for shard 0 comes up
                if i == 400:
                    # From here every shard-0 post reaches A and A2. A is killed once it has decided what reached it
                    # alone (a rolling restart's drain), while the flood goes on: it dies in the middle of shared work.
                    await a2_ready
                    only_a = [m["id"] for m, _ in sent if shard_of(m["guild_id"], 2) == 0
                              and m["id"] not in delivered(a2.sessions[0])]
                    drained = asyncio.create_task(decided(only_a))
                if i >= 450 and killed_at is None and (drained.done() or i == 900):
                    await drained
                    a.kill()                                                   # kill -9
                    killed_at, killed_time = i, asyncio.get_running_loop().time()
                if i == 650:
                    await fake.reconnect(b.sessions[0], overlap=25)           # B resumes and gets 25 events again
                await asyncio.sleep(0.004)
            for msg, _ in rng.sample(sent, 40):
                await fake.dispatch("MESSAGE_CREATE", msg)                     # late duplicates of old posts

            ids = list(message)
            try:
                await decided(list(ids))
            except TimeoutError:
                records = await ledger.posts(ids, communities)
                missing = [mid for mid, r in records.items() if not r.decisions]
                where = Counter((ids.index(mid) // 50 * 50, shard_of(message[mid]["guild_id"], 2),
                                 tuple(p.name for p in (a, a2, b) if p.sessions and mid in delivered(p.sessions[0])))
                                for mid in missing)
                raise AssertionError(f"{len(missing)} posts never decided (flood index, shard, got by): {where}")
            # A2 takes A's unfinished posts over once A has been silent for TAKEOVER_AFTER (plus a heartbeat).
            await asyncio.sleep(max(0.0, killed_time + 2 * TAKEOVER_AFTER - asyncio.get_running_loop().time()))
            await settle(fake)
            records = await ledger.posts(ids, communities)
            cases, withheld, taken_over = {}, Counter(), []
            for community in communities:
                cases.update({e["case_id"]: e["post_id"] for e in await ledger.events(community, "case_opened")})
                withheld.update(e["detail"]["reason"].split(" ")[0]
                                for e in await ledger.events(community, "note_withheld"))
                taken_over += [e for e in await ledger.events(community, "taken_over")]
    finally:
        codes = {p.name: await p.stop() for p in (a2, b) if p.proc is not None}
        if a.proc is not None and a.proc.returncode is None:
            a.kill()
            await a.proc.wait()

    # -- the flood happened as described -----------------------------------------------------------------
    assert a.proc.returncode == -9 and codes == {"A2": 130, "B": 130}, (codes, a2.log()[-3000:], b.log()[-3000:])
    assert b.sessions[0].resumes == 1 and not b.errors() and not a2.errors(), (b.errors(), a2.errors())
    a_got, a2_got, b_got = delivered(a.sessions[0]), delivered(a2.sessions[0]), delivered(b.sessions[0])
    both = set(a_got) & set(a2_got)
    assert killed_at is not None and len(both) >= 50                       # shard-0 posts that reached two processes
    assert sum(a_got.values()) + sum(a2_got.values()) + sum(b_got.values()) >= FLOOD + len(both) + 80   # duplicates
    assert sum(n > 1 for n in b_got.values()) >= 10                        # B saw some posts twice (RESUME included)

    # -- every post decided exactly once, nothing lost ----------------------------------------------------
    undecided = [r.message_id for r in records.values() if not r.decisions]
    twice = {r.message_id: r.decisions for r in records.values() if len(r.decisions) > 1}
    assert not undecided and not twice, (undecided, twice)

    # -- at most one note and one crisis reply per post; the database agrees with Discord ------------------
    # A resend with the same nonce (a takeover of a post A sent but could not record) returns Discord's first message:
    # count messages made, not requests.
    replies = defaultdict(list)       # (post message id, kind) -> replies the fake made, one request per message
    card_messages = defaultdict(set)  # case id -> card messages made
    made: set[str] = set()
    by_token = Counter()
    for r in bot_posts(fake):
        by_token[r.headers["Authorization"]] += 1
        if r.response["id"] in made:
            continue
        made.add(r.response["id"])
        ref = r.json.get("message_reference")
        if ref:
            footer = r.json["embeds"][0]["footer"]["text"]
            replies[(str(ref["message_id"]), "note" if footer.startswith("Note ") else "resources")].append(r)
        elif (m := re.search(r"Case #(\d+)", r.json["embeds"][0]["title"])):
            card_messages[int(m[1])].add(r.response["id"])
    cards = Counter({case: len(ids) for case, ids in card_messages.items()})
    assert all(len(v) == 1 for v in replies.values()), {k: len(v) for k, v in replies.items() if len(v) > 1}
    assert all(n == 1 for n in cards.values()), {c: n for c, n in cards.items() if n > 1}
    posted = {k: v[0].response["id"] for k, v in replies.items()}
    # What the kill -9 can leave, and only for posts the killed process A had received: a reply reserved in the
    # post's transaction but never posted (A died before Discord got it), a reply posted but not recorded (A died
    # before storing its id), a case whose card was never posted. Nothing retakes these yet (a reservation does not
    # say which process holds it or since when): they are counted and reported; anywhere else they fail the test.
    unrecorded = [(mid, kind) for (mid, kind), message_id in posted.items()
                  if records[mid].replies.get(kind) != message_id]
    assert all(records[mid].replies.get(kind) is None
               and replies[(mid, kind)][0].headers["Authorization"] == f"Bot {a.token}"
               for mid, kind in unrecorded), [(k, records[k[0]].replies) for k in unrecorded]
    orphans = [(r.message_id, kind) for r in records.values() for kind, m in r.replies.items()
               if m is None and (r.message_id, kind) not in posted]
    message_of_post = {r.post_id: r.message_id for r in records.values()}
    lost_cards = [message_of_post[post_id] for case, post_id in cases.items() if case not in cards]
    unanswered = [m["id"] for m, kind in sent if kind[3] and (m["id"], "resources") not in posted]
    assert set(unanswered) <= {mid for mid, kind in orphans if kind == "resources"}, unanswered   # every crisis answered
    assert {mid for mid, _ in orphans + unrecorded} | set(lost_cards) <= set(a_got), (orphans, unrecorded, lost_cards)
    # Whatever the kill left (it varies with timing) was taken over by A2, A's successor on shard 0, from A only.
    assert {e["detail"]["from"].split(":")[1] for e in taken_over} <= {str(a.proc.pid)}, taken_over
    print(f"kill -9 of A: {len(taken_over)} post(s) taken over by A2")
    if KILL_LOSES_NOTHING:
        assert not (orphans or unrecorded or lost_cards), (orphans, unrecorded, lost_cards)
    elif orphans or unrecorded or lost_cards:
        warnings.warn(f"kill -9 of process A left {len(orphans)} reserved but unsent repl(ies) "
                      f"({Counter(k for _, k in orphans)}), {len(unrecorded)} sent but unrecorded, "
                      f"{len(lost_cards)} case(s) without a card: nothing retakes a dead process's reservations")

    # -- cooldowns held across processes: one note per member, topic and server; three per channel ---------
    notes = [(mid, v[0]) for (mid, kind), v in replies.items() if kind == "note"]
    topic_of = {m["id"]: kind[2] for m, kind in sent}
    per_member = Counter((message[mid]["guild_id"], message[mid]["author"]["id"], topic_of[mid]) for mid, _ in notes)
    per_channel = Counter(message[mid]["channel_id"] for mid, _ in notes)
    assert per_member and max(per_member.values()) == 1, per_member.most_common(3)
    per_channel_notes = policy.community.cooldowns.per_channel_notes   # per 10 minutes: the flood takes far less
    assert max(per_channel.values()) <= per_channel_notes, per_channel.most_common(3)
    assert withheld["this"] >= 5 and withheld[str(per_channel_notes)] >= 5, withheld   # both cooldowns did bite
    # Every process did part of the work, the replacement included.
    assert all(by_token[f"Bot {p.token}"] > 0 for p in (a, a2, b)), by_token
