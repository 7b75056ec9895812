"""Case cards in the moderators' channel and their persistent buttons; members' note feedback and disputes.

Every button is a `DynamicItem` whose custom id carries the case or decision id, so cards and notes posted
before a restart keep working: the state lives in storage, not in the view object. The actions themselves
are `bot.cases.CaseService`'s (the same ones the dashboard uses); this cog only renders and answers.
"""
from __future__ import annotations

import logging
from typing import cast

import discord
from discord.ext import commands

from bot.cases import CaseConflict, CaseNotFound, NotAllowed
from bot.cogs import render
from bot.storage.cases import check_actionable
from bot.storage.contract import Storage
from bot.storage.rows import CaseRow

log = logging.getLogger("caveat.review")

VERBS = {"claim": ("Claim", discord.ButtonStyle.primary), "unclaim": ("Unclaim", discord.ButtonStyle.secondary),
         "note": ("Send note", discord.ButtonStyle.success),
         "dismiss": ("Dismiss (false positive)", discord.ButtonStyle.secondary),
         "remove": ("Remove post", discord.ButtonStyle.danger), "escalate": ("Escalate", discord.ButtonStyle.danger)}
FEEDBACK = {"helpful": ("Helpful", discord.ButtonStyle.secondary), "not_helpful": ("Not helpful", discord.ButtonStyle.secondary),
            "dispute": ("Dispute", discord.ButtonStyle.secondary)}
NO_PINGS = discord.AllowedMentions.none()
MOD_ONLY = "Only moderators (Manage Messages) can act on cases."


def is_moderator(interaction: discord.Interaction) -> bool:
    """Server-side check: Manage Messages in the channel where the member clicked."""
    return interaction.guild is not None and interaction.permissions.manage_messages


def role_ping(role_id: str | None) -> tuple[str, discord.AllowedMentions]:
    """The mention text and allowed mentions that ping exactly one role (or nobody)."""
    if not role_id:
        return "", NO_PINGS
    return f"<@&{role_id}> ", discord.AllowedMentions(everyone=False, users=False, roles=[discord.Object(int(role_id))])


CRISIS_STATUS = {
    "sending": "Crisis resources are being posted under the post now.",
    "delivered": "Crisis resources were posted under the post.",
    "retrying": "Crisis resources could NOT be posted yet ({error}); Caveat keeps trying. Please reach out to the "
                "member directly.",
    "failed": "Crisis resources could NOT be posted ({error}); Caveat gave up. Please reach out to the member "
              "directly.",
    "not_sent": "No crisis reply was posted (it was already sent for this post, or this is a replay).",
}


def alert_text(case_id: int, status: str | None, ping: str = "", error: str | None = None) -> str:
    """The emergency alert's first line, saying truthfully where the crisis reply stands."""
    line = CRISIS_STATUS.get(status or "", "").format(error=error or "unknown error")
    return f"{ping}🚨 Emergency: a member may be in crisis (case #{case_id}). {line}".strip()


def _review(interaction: discord.Interaction) -> Review:
    """The Review cog of the bot that got `interaction` (loaded at start: a failing extension stops the start).
    Cast, not checked: discord.py types `interaction.client` as the base Client, which has no cogs."""
    return cast("Review", cast(commands.Bot, interaction.client).get_cog("Review"))


class CaseButton(discord.ui.DynamicItem[discord.ui.Button],
                 template=r"caveat:case:(?P<id>\d+):(?P<verb>claim|unclaim|note|dismiss|remove|escalate)"):
    """A moderator action on a case card: custom id `caveat:case:<id>:<verb>`."""

    def __init__(self, case_id: int, verb: str):
        label, style = VERBS[verb]
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=f"caveat:case:{case_id}:{verb}"))
        self.case_id, self.verb = case_id, verb

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        """Rebuild the button from its custom id (after a restart too)."""
        return cls(int(match["id"]), match["verb"])

    async def callback(self, interaction: discord.Interaction) -> None:
        """Hand the click to the Review cog."""
        await _review(interaction).case_action(interaction, self.case_id, self.verb)


class ReasonSelect(discord.ui.DynamicItem[discord.ui.Select], template=r"caveat:reason:(?P<id>\d+):(?P<verb>dismiss|remove)"):
    """The reason-code menu that Dismiss and Remove require: custom id `caveat:reason:<id>:<verb>`."""

    def __init__(self, case_id: int, verb: str, codes: tuple[str, ...] = ()):
        options = [discord.SelectOption(label=c, value=c) for c in codes[:25]] or [discord.SelectOption(label="other")]
        super().__init__(discord.ui.Select(custom_id=f"caveat:reason:{case_id}:{verb}", options=options,
                                           placeholder=f"Reason for {verb}"))
        self.case_id, self.verb = case_id, verb

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        """Rebuild the menu from its custom id."""
        return cls(int(match["id"]), match["verb"], tuple(o.value for o in item.options))

    async def callback(self, interaction: discord.Interaction) -> None:
        """Resolve the case with the chosen reason."""
        await _review(interaction).resolve_with_reason(interaction, self.case_id, self.verb,
                                                                      self.item.values[0])


class FeedbackButton(discord.ui.DynamicItem[discord.ui.Button],
                     template=r"caveat:fb:(?P<id>\d+):(?P<kind>helpful|not_helpful|dispute)"):
    """Members' reaction under a note: custom id `caveat:fb:<decision id>:<kind>`."""

    def __init__(self, decision_id: int, kind: str):
        label, style = FEEDBACK[kind]
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=f"caveat:fb:{decision_id}:{kind}"))
        self.decision_id, self.kind = decision_id, kind

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        """Rebuild the button from its custom id."""
        return cls(int(match["id"]), match["kind"])

    async def callback(self, interaction: discord.Interaction) -> None:
        """Store the feedback, or open the dispute form."""
        await _review(interaction).feedback(interaction, self.decision_id, self.kind)


class DisputeModal(discord.ui.Modal, title="Dispute this note"):
    """Asks the member why the note is wrong; the answer becomes a case for moderators."""

    reason: discord.ui.TextInput[DisputeModal] = discord.ui.TextInput(label="Why is this note wrong or unfair?", style=discord.TextStyle.paragraph,
                                  min_length=5, max_length=800)

    def __init__(self, decision_id: int):
        super().__init__(custom_id=f"caveat:dispute:{decision_id}")
        self.decision_id = decision_id

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Record the dispute and open a case."""
        await _review(interaction).dispute(interaction, self.decision_id, self.reason.value)


def case_view(case: CaseRow) -> discord.ui.View | None:
    """The persistent buttons of an unresolved case (none once it is resolved); a claimed case offers Unclaim."""
    if case["status"] == "resolved":
        return None
    view = discord.ui.View(timeout=None)
    for verb in VERBS:
        if verb == ("claim" if case["status"] == "claimed" else "unclaim"):
            continue
        view.add_item(CaseButton(case["id"], verb))
    return view


def note_view(decision_id: int) -> discord.ui.View:
    """Helpful / Not helpful / Dispute under a public note."""
    view = discord.ui.View(timeout=None)
    for kind in FEEDBACK:
        view.add_item(FeedbackButton(decision_id, kind))
    return view


class Review(commands.Cog):
    """Posts and updates case cards and answers moderators' clicks through the cases service."""

    def __init__(self, bot):
        self.bot = bot
        self.store: Storage = bot.store
        self.cases = bot.cases

    async def cog_load(self) -> None:
        """Register the persistent items so old cards and notes keep working."""
        self.bot.add_dynamic_items(CaseButton, ReasonSelect, FeedbackButton)

    async def cog_unload(self) -> None:
        """Unregister the persistent items."""
        self.bot.remove_dynamic_items(CaseButton, ReasonSelect, FeedbackButton)

    # -- cards ---------------------------------------------------------------------------------
    async def _dispute_text(self, case: CaseRow) -> str | None:
        if case.get("kind") != "dispute":
            return None
        reason = await self.store.dispute_reason(case["decision_id"])
        return f"<@{case['author_id']}> disputes the note: {reason}" if reason else "The author disputes the note."

    async def publish_card(self, community: str, case_id: int, *, alert: bool = False,
                           crisis_status: str | None = None) -> None:
        """Post the case card in this server's moderators' channel, or update it; an alert pings on-call and says
        truthfully where the crisis reply stands (see `alert_text`)."""
        case = await self.store.case(case_id, community=community)
        embed = render.case_embed(case, self.bot.policy, extra=await self._dispute_text(case))
        view = case_view(case)
        channel = await self.bot.mod_channel(community)
        if channel is None:
            log.warning("case %s: this server has no moderators' channel (/caveat setup); no card posted", case_id)
            await self.store.audit("caveat", "case_card_skipped", community=community, case_id=case_id,
                                   detail={"reason": "no moderators' channel set"})
            return
        if card_id := case.get("card_message_id"):
            await channel.get_partial_message(int(card_id)).edit(embed=embed, view=view)
            return
        content, mentions = None, NO_PINGS
        config = await self.bot.community_config(community)
        if alert:
            ping, mentions = role_ping(config.oncall_role_id)
            content = alert_text(case_id, crisis_status, ping)
        # One nonce per case card: a copy posted by a process that died before recording it is not posted twice.
        msg = await channel.send(content=content, embed=embed, view=view, allowed_mentions=mentions,
                                 nonce=f"cvc{case_id}")
        await self.store.set_case_card(case_id, str(msg.id))
        await self.store.audit("caveat", "alert_sent" if alert else "case_card_posted", community=community,
                               case_id=case_id, post_id=case["post_id"],
                               detail={"message_id": str(msg.id), "pinged_role": bool(alert and config.oncall_role_id),
                                       "crisis_reply": crisis_status})

    async def update_alert(self, community: str, case_id: int, status: str, error: str | None = None) -> None:
        """Say on the alert where the crisis reply now stands (an edit pings nobody again)."""
        case = await self.store.case(case_id, community=community)
        channel = await self.bot.mod_channel(community)
        card_id = case.get("card_message_id")
        if channel is None or not card_id:
            return
        config = await self.bot.community_config(community)
        ping, _ = role_ping(config.oncall_role_id)
        await channel.get_partial_message(int(card_id)).edit(
            content=alert_text(case_id, status, ping, error), allowed_mentions=NO_PINGS)
        await self.store.audit("caveat", "alert_updated", community=community, case_id=case_id,
                               detail={"crisis_reply": status, "error": error})

    async def escalation_alert(self, community: str, case_id: int, actor: str, *, realert: bool = False) -> bool:
        """Ping this server's on-call role about a case; False when there is nowhere to post."""
        channel = await self.bot.mod_channel(community)
        if channel is None:
            return False
        config = await self.bot.community_config(community)
        ping, mentions = role_ping(config.oncall_role_id)
        if realert:
            text = f"{ping}🚨 Still unattended: emergency case #{case_id} has not been claimed. Please take it now."
        else:
            text = f"{ping}Case #{case_id} was escalated by <@{actor}>; please take a look."
        await channel.send(text.strip(), allowed_mentions=mentions)
        await self.store.audit(actor, "realert_sent" if realert else "escalation_alert", community=community,
                               case_id=case_id, detail={"pinged_role": bool(config.oncall_role_id)})
        return True

    async def _show(self, interaction: discord.Interaction, case: CaseRow, message: str) -> None:
        """Answer the click: update the clicked card in place, else say what happened privately."""
        card_id = case.get("card_message_id")
        if interaction.message is not None and card_id and interaction.message.id == int(card_id) \
                and not interaction.response.is_done():
            embed = render.case_embed(case, self.bot.policy, extra=await self._dispute_text(case))
            await interaction.response.edit_message(embed=embed, view=case_view(case))
        elif not interaction.response.is_done():
            await interaction.response.send_message(message, ephemeral=True)

    async def _carry_out(self, result) -> str | None:
        """Run the platform actions the service queued (post the note, delete, alert, cards) right away;
        returns what failed, if anything."""
        outcomes = await self.bot.get_cog("Outbox").run_pending()
        failed = [outcomes[a] for a in result.actions if outcomes.get(a, "").startswith("failed")]
        return f"Could not carry it out on Discord ({'; '.join(failed)}); do it by hand." if failed else None

    @staticmethod
    async def _report(interaction: discord.Interaction, problem: str | None) -> None:
        if problem:
            await interaction.followup.send(problem, ephemeral=True)

    # -- moderators' actions -------------------------------------------------------------------
    async def case_action(self, interaction: discord.Interaction, case_id: int, verb: str) -> None:
        """Claim, unclaim, send note, dismiss, remove or escalate; refused for non-moderators and other holders."""
        if not is_moderator(interaction):
            await interaction.response.send_message(MOD_ONLY, ephemeral=True)
            return
        community, mod = str(interaction.guild_id), str(interaction.user.id)
        try:
            if verb in ("dismiss", "remove"):
                case = await self.cases.case(community, case_id)
                check_actionable(case, mod)
                view = discord.ui.View(timeout=None)
                view.add_item(ReasonSelect(case_id, verb, self.bot.policy.community.reason_codes))
                await interaction.response.send_message(f"Choose a reason to {verb} case #{case_id}.", view=view,
                                                        ephemeral=True)
                return
            action = {"claim": self.cases.claim, "unclaim": self.cases.unclaim, "note": self.cases.send_note,
                      "escalate": self.cases.escalate}[verb]
            result = await action(community, case_id, mod)
        except CaseNotFound:
            await interaction.response.send_message(f"No case #{case_id} in this server.", ephemeral=True)
            return
        except CaseConflict as exc:
            await self._refuse(interaction, exc)
            return
        problem = await self._carry_out(result)
        await self._show(interaction, result.case, result.message)
        await self._report(interaction, problem)

    async def _refuse(self, interaction: discord.Interaction, exc: CaseConflict) -> None:
        text = str(exc)
        if exc.holder and str(exc.holder).isdigit():  # show who holds it as a mention (no ping)
            mention = f"<@{exc.holder}>"
            text = text.replace(f" by {exc.holder}", f" by {mention}") if f" by {exc.holder}" in text \
                else f"{text} by {mention}"
        await self.store.audit(str(interaction.user.id), "action_refused", community=str(interaction.guild_id),
                               detail={"reason": str(exc)})
        await interaction.response.send_message(f"Refused: {text}.", ephemeral=True, allowed_mentions=NO_PINGS)

    async def resolve_with_reason(self, interaction: discord.Interaction, case_id: int, verb: str, code: str) -> None:
        """Dismiss or remove with a reason code; Remove deletes the member's post with an audit reason."""
        if not is_moderator(interaction):
            await interaction.response.send_message(MOD_ONLY, ephemeral=True)
            return
        community, mod = str(interaction.guild_id), str(interaction.user.id)
        try:
            action = self.cases.dismiss if verb == "dismiss" else self.cases.remove
            result = await action(community, case_id, mod, code)
        except ValueError as exc:
            await interaction.response.send_message(f"Refused: {exc}.", ephemeral=True)
            return
        except (CaseConflict, CaseNotFound) as exc:
            await self._refuse(interaction, exc if isinstance(exc, CaseConflict) else CaseConflict(str(exc)))
            return
        problem = await self._carry_out(result)
        await interaction.response.edit_message(content=f"Case #{case_id}: {verb} with reason `{code}`.", view=None)
        await self._report(interaction, problem)

    # -- members' feedback ---------------------------------------------------------------------
    async def feedback(self, interaction: discord.Interaction, decision_id: int, kind: str) -> None:
        """Helpful / Not helpful are stored against the decision; Dispute opens a form, for the post's author only."""
        community, user = str(interaction.guild_id), str(interaction.user.id)
        if kind == "dispute":
            decision = await self.store.decision(decision_id, community=community)
            if decision is None:
                await interaction.response.send_message("That note is no longer on record.", ephemeral=True)
            elif decision["author_id"] != user:
                await interaction.response.send_message(
                    "Only the member who wrote the post can dispute its note. You can use Helpful / Not helpful.",
                    ephemeral=True)
            else:
                await interaction.response.send_modal(DisputeModal(decision_id))
            return
        try:
            new = await self.cases.feedback(community, decision_id, user, kind)
        except CaseNotFound:
            await interaction.response.send_message("That note is no longer on record.", ephemeral=True)
            return
        text = "Thanks, your feedback was recorded." if new else "You already gave this feedback."
        await interaction.response.send_message(text, ephemeral=True)

    async def dispute(self, interaction: discord.Interaction, decision_id: int, reason: str) -> None:
        """Store the dispute and put it in front of moderators as a case."""
        try:
            result = await self.cases.dispute(str(interaction.guild_id), decision_id, str(interaction.user.id), reason)
        except (CaseNotFound, NotAllowed) as exc:
            await interaction.response.send_message(str(exc).capitalize() + ".", ephemeral=True)
            return
        await interaction.response.send_message(result.message, ephemeral=True)
        await self.bot.get_cog("Outbox").run_pending()


async def setup(bot) -> None:
    """Extension entry point."""
    await bot.add_cog(Review(bot))
