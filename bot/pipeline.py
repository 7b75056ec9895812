"""The one path every adapter (Discord, web sandbox, replay) takes: assess, store, then say what to post.

Order matters: the model scores the post first (outside any transaction); then ONE transaction stores the
post, the decision, its case, and reserves the public reply together with the cooldown it uses. Processing
the same post twice, or many posts at once, therefore never sends a second note or breaks a cooldown.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from bot import metrics
from bot.community import CommunityConfig, is_shadow, load_config
from bot.engine import Decision, Engine, Post
from bot.engine.actions import has_note, has_queue
from bot.score_workers import WorkerUnavailable
from bot.storage.contract import Storage
from classifiers.normalize import clean_text
from classifiers.rules import truncation_notice
from policies.loader import PolicySet

log = logging.getLogger("caveat.pipeline")


class Scorer(Protocol):
    """Anything that scores texts with the model: the classifier runner, or a test double."""

    version: str

    async def score(self, text: str) -> dict[str, float]:
        """Model probabilities per label for one text."""


@dataclass(frozen=True)
class Outcome:
    """What happened to a post and what the adapter should do now."""

    post_id: int
    decision_id: int | None
    decision: Decision | None
    case_id: int | None = None
    reply: str | None = None          # 'note' | 'resources' | None: the adapter must post it, then confirm
    note_blocked: str | None = None   # why a note was not sent (shadow mode, cooldown, already sent)
    duplicate: bool = False
    shadow: bool = False
    replayed: bool = False
    cooldown_id: int | None = None    # the cooldown reserved with the note (released if posting fails)
    community_id: str = ""


def has_platform_work(outcome: Outcome) -> bool:
    """Has the adapter something to post for this outcome (a reply, a case card)? Most posts have nothing: they
    are neither marked for takeover nor released, so they cost no extra write."""
    return outcome.reply is not None or outcome.case_id is not None


class Pipeline:
    """Assess posts with the current policy and optional model, and keep storage in step."""

    #: The bot process acting on the posts this pipeline stores (None: nothing is posted by this process, e.g. a
    #: replay or the dashboard's sandbox). Another bot process finishes a dead one's reserved replies and cards.
    instance: str | None = None

    def __init__(self, store: Storage, policy: PolicySet, scorer: Scorer | None = None, workers=None):
        """`workers`: a started bot.score_workers.ScoreWorkers (`--score-workers N`): posts are assessed in its
        processes, each with the policy this pipeline holds when the post arrives; a post they cannot score
        (its worker died twice) is assessed here with `scorer`, and one they have not assessed within
        `workers.deadline_s` (the model's timeout: a flood queues behind busy workers) by rules with review,
        as when the model times out in this process."""
        self.store = store
        self.scorer = scorer
        self.workers = workers
        self.set_policy(policy)

    def set_policy(self, policy: PolicySet) -> None:
        """Switch to a new (already validated) PolicySet."""
        self.policy = policy
        self.engine = Engine(policy)

    async def config(self, community_id: str) -> CommunityConfig:
        """The settings in force for a community."""
        return await load_config(self.store, self.policy, community_id)

    async def decide(self, post: Post, scores: dict[str, float] | None = None) -> Decision:
        """Assess without storing anything (dry runs: `/caveat test`, `caveat check`).

        `scores`: model probabilities already computed for this text (bulk replay scores many posts at once).
        A post longer than 2,000 characters is normalized and assessed in a worker thread, so a long post never
        blocks the event loop (the Discord gateway); one longer than what is assessed in full
        (classifiers.rules.MAX_ASSESSED_CHARS) says so in `why`. A lone surrogate in the text (never valid
        UTF-8) is read as U+FFFD.
        """
        text = clean_text(post.text)
        if text is not post.text:
            post = replace(post, text=text)
        late = False  # the score workers took longer than the model's timeout: rules + review, as in-process
        if self.workers is not None and scores is None:
            try:
                decision, model_failed = await asyncio.wait_for(self.workers.decide(post, self.policy),
                                                                self.workers.deadline_s)
            except WorkerUnavailable as exc:
                log.warning("score workers could not assess post %s (%s); assessing it here", post.key, exc)
                metrics.score_worker_fallback()
            except asyncio.TimeoutError:
                log.warning("score workers did not assess post %s within %gs; using rules only", post.key,
                            self.workers.deadline_s)
                late = True
            else:
                if model_failed:
                    log.warning("model scoring failed for post %s in a score worker; using rules only", post.key)
                    metrics.model_fallback()
                return decision
        long_post = len(text) > 2_000  # a few ms of normalizing and matching; up to the cap, ~15 ms

        async def run(fn, *args, **kw):
            return await asyncio.to_thread(fn, *args, **kw) if long_post else fn(*args, **kw)

        if self.scorer is None:
            decision = await run(self.engine.assess, post)
        elif scores is not None:
            decision = await run(self.engine.assess, post, scores, model_version=self.scorer.version)
        else:
            failed = late
            if late:
                metrics.model_fallback()
            else:
                try:
                    scores = await self.scorer.score(await run(self.engine.model_input, text))
                except Exception as exc:  # model failure or timeout: fail safe to rules + review
                    log.warning("model scoring failed for post %s: %s; using rules only", post.key,
                                type(exc).__name__)
                    metrics.model_fallback()
                    failed = True
            if failed:
                decision = await run(self.engine.assess, post, model_version=self.scorer.version, model_failed=True)
            else:
                decision = await run(self.engine.assess, post, scores, model_version=self.scorer.version)
        notice = truncation_notice(text)
        return replace(decision, why=f"{decision.why} {notice}") if notice else decision

    async def _prepare(self, post: Post, parents: tuple[str, ...], shadow: bool | None) -> tuple[Post, bool]:
        """The community's locale on the post, and shadow mode from the channel, its parents, or the community."""
        config = await self.config(post.community_id)
        if post.locale is None:
            post = replace(post, locale=config.locale)
        if shadow is None:
            shadow = await is_shadow(self.store, config, (post.channel_id, *parents))
        return post, shadow

    async def handle(self, post: Post, *, shadow: bool | None = None, replayed: bool = False,
                     parents: tuple[str, ...] = (), now: datetime | None = None,
                     scores: dict[str, float] | None = None) -> Outcome:
        """Process a new post once; a repeat of the same message returns the stored outcome and no reply.

        `replayed`: a post from history (`caveat replay`): its case is a replay case and no reply is reserved.
        `parents`: the channel ids a thread inherits settings from (its parent channel or forum).
        """
        post = _clean(post)
        started = time.perf_counter()
        stored = await self.store.post_by_message(post.platform, post.message_id)
        if stored is not None:
            existing = await self.store.latest_decision(stored["id"])
            if existing is not None:
                return Outcome(stored["id"], existing["id"], None, duplicate=True, community_id=post.community_id)
        post, shadow = await self._prepare(post, parents, shadow if not replayed else True)
        decision = await self.decide(post, scores)
        async with self.store.transaction(community=post.community_id):  # other communities run alongside
            post_id, new = await self.store.upsert_post(post, now=now)
            if not new:
                existing = await self.store.latest_decision(post_id)
                if existing is not None:  # another task stored it while this one was scoring
                    return Outcome(post_id, existing["id"], None, duplicate=True, community_id=post.community_id)
            outcome = await self._record(post, post_id, decision, shadow=shadow, replayed=replayed, now=now)
            if self.instance is not None and has_platform_work(outcome):
                # this process posts what was reserved; if it dies, another will
                await self.store.set_handler(post_id, self.instance)
        metrics.observe_decision(decision, time.perf_counter() - started)
        return outcome

    async def handle_edit(self, post: Post, *, parents: tuple[str, ...] = (),
                          now: datetime | None = None) -> Outcome | None:
        """Re-assess an edited post: the case follows the new decision; a second note is never sent."""
        post = _clean(post)
        stored = await self.store.post_by_message(post.platform, post.message_id)
        if stored is None:
            return await self.handle(post, parents=parents, now=now)
        if stored["deleted_at"] or stored["purged_at"]:
            return None
        post, shadow = await self._prepare(post, parents, None)
        decision = await self.decide(post)
        async with self.store.transaction(community=post.community_id):
            await self.store.edit_post(stored["id"], post.text, now=now)
            outcome = await self._record(post, stored["id"], decision, shadow=shadow, now=now, edited=True)
            if self.instance is not None and has_platform_work(outcome):
                await self.store.set_handler(stored["id"], self.instance)
            await self.store.audit("caveat", "reassessed_edit", community=post.community_id, post_id=stored["id"],
                                   decision_id=outcome.decision_id, detail={"action": decision.action}, now=now)
        return outcome

    async def handle_delete(self, platform: str, message_id: str, *, now: datetime | None = None) -> int | None:
        """The member deleted the post: purge its text and close its cases."""
        return await self.store.delete_post(platform, message_id, now=now)

    async def _record(self, post: Post, post_id: int, decision: Decision, *, shadow: bool, now: datetime | None,
                      edited: bool = False, replayed: bool = False) -> Outcome:
        """Inside the post's transaction: decision, audit, case, and the reply with its cooldown."""
        store, community = self.store, post.community_id
        decision_id = await store.save_decision(post_id, decision, community=community, shadow=shadow,
                                                replayed=replayed, now=now)
        await store.audit("caveat", "decision", community=community, post_id=post_id, decision_id=decision_id,
                          detail={"action": decision.action, "labels": list(decision.labels), "mode": decision.mode,
                                  "shadow": shadow, "replayed": replayed, "model_version": decision.model_version,
                                  "policy_version": decision.policy_version}, now=now)
        case_id = None
        # A queued action opens a case; shadow mode records what would have happened; an edit updates its case.
        if decision.action != "none" and (has_queue(decision.action) or shadow or replayed or
                                          (edited and await store.has_open_case(post_id))):
            if replayed:
                kind = "replay"
            else:
                kind = "shadow" if shadow and decision.action != "escalate" else "flag"
            case_id = await store.open_case(post_id, decision_id, decision, channel_id=post.channel_id,
                                            community_id=community, kind=kind, now=now)
            await store.audit("caveat", "case_opened", community=community, case_id=case_id, post_id=post_id,
                              decision_id=decision_id, detail={"kind": kind}, now=now)
        reply, blocked, cooldown_id = None, None, None
        if replayed:
            blocked = "replayed history: nothing is posted"
        elif decision.action == "escalate":
            # The emergency lane ignores shadow mode and cooldowns: a member in crisis always gets resources.
            if await store.claim_reply(post_id, "resources", now=now):
                reply = "resources"
        elif has_note(decision.action):
            reply, blocked, cooldown_id = await self._note_gate(post, post_id, decision, shadow=shadow, now=now)
            if blocked:
                await store.audit("caveat", "note_withheld", community=community, post_id=post_id,
                                  decision_id=decision_id, detail={"reason": blocked}, now=now)
        return Outcome(post_id, decision_id, decision, case_id, reply, blocked, shadow=shadow, replayed=replayed,
                       cooldown_id=cooldown_id, community_id=community)

    async def _note_gate(self, post: Post, post_id: int, decision: Decision, *, shadow: bool,
                         now: datetime | None) -> tuple[str | None, str | None, int | None]:
        """May a public note go out? Shadow mode, an earlier note and cooldowns say no; yes reserves both the
        reply and the cooldown in the caller's transaction."""
        if shadow:
            return None, "shadow mode", None
        if "note" in await self.store.replies(post_id):
            return None, "a note was already sent for this post", None
        cd = self.policy.community.cooldowns
        topic = decision.topic or decision.note_id or "general"
        allowed, reason = await self.store.note_allowed(
            post.community_id, post.channel_id, post.author_id, topic,
            per_user_topic_hours=cd.per_user_topic_hours, per_channel_notes=cd.per_channel_notes,
            per_channel_window_minutes=cd.per_channel_window_minutes, now=now)
        if not allowed:
            return None, reason, None
        if not await self.store.claim_reply(post_id, "note", now=now):
            return None, "a note was already sent for this post", None
        cooldown_id = await self.store.record_note(post.community_id, post.channel_id, post.author_id, topic, now=now)
        return "note", None, cooldown_id

    async def reply_sent(self, post: Post, outcome: Outcome, message_id: str | None, *,
                         now: datetime | None = None) -> None:
        """The adapter posted the reply: remember its id (the cooldown was reserved with it)."""
        if outcome.reply is None:  # no reply was reserved for this post
            return
        async with self.store.transaction(community=post.community_id):
            await self.store.set_reply_message(outcome.post_id, outcome.reply, message_id)
            await self.store.audit("caveat", f"{outcome.reply}_sent", community=post.community_id,
                                   post_id=outcome.post_id, decision_id=outcome.decision_id,
                                   detail={"message_id": message_id}, now=now)

    async def reply_failed(self, outcome: Outcome, error: str, *, now: datetime | None = None) -> None:
        """Posting the reply failed: release the reply and its cooldown so a retry can send it; audit why."""
        if outcome.reply is None:  # no reply was reserved for this post
            return
        async with self.store.transaction(community=outcome.community_id or None):
            await self.store.release_reply(outcome.post_id, outcome.reply)
            if outcome.cooldown_id is not None:
                await self.store.release_note(outcome.cooldown_id)
            await self.store.audit("caveat", f"{outcome.reply}_failed", community=outcome.community_id,
                                   post_id=outcome.post_id, decision_id=outcome.decision_id,
                                   detail={"error": error}, now=now)


def _clean(post: Post) -> Post:
    """Lone surrogates (never valid UTF-8) read as U+FFFD, so the post can be stored and assessed."""
    return replace(post, text=clean_text(post.text), author_name=clean_text(post.author_name),
                   channel_name=clean_text(post.channel_name))


def replace_text(post: Post, text: str) -> Post:
    """A copy of `post` with new text (for edits)."""
    return replace(post, text=text)
