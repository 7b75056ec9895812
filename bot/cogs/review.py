"""Case cards in the moderators' channel and their persistent buttons; members' note feedback and disputes.

Every button is a `DynamicItem` whose custom id carries the case or decision id, so cards and notes posted
before a restart keep working: the state lives in storage, not in the view object.
"""
from __future__ import annotations

import logging
from types import SimpleNamespace

import discord
from discord.ext import commands

from bot.cogs import render
from bot.engine.actions import SEVERITY
from bot.storage import CaseConflict, CaseNotFound

log = logging.getLogger("caveat.review")

VERBS = {"claim": ("Claim", discord.ButtonStyle.primary), "note": ("Send note", discord.ButtonStyle.success),
         "dismiss": ("Dismiss (false positive)", discord.ButtonStyle.secondary),
         "remove": ("Remove post", discord.ButtonStyle.danger), "escalate": ("Escalate", discord.ButtonStyle.danger)}
FEEDBACK = {"helpful": ("Helpful", discord.ButtonStyle.secondary), "not_helpful": ("Not helpful", discord.ButtonStyle.secondary),
            "dispute": ("Dispute", discord.ButtonStyle.secondary)}
NO_PINGS = discord.AllowedMentions.none()


def is_moderator(interaction: discord.Interaction) -> bool:
    """Server-side check: Manage Messages in the channel where the member clicked."""
    return interaction.guild is not None and interaction.permissions.manage_messages


class CaseButton(discord.ui.DynamicItem[discord.ui.Button],
                 template=r"caveat:case:(?P<id>\d+):(?P<verb>claim|note|dismiss|remove|escalate)"):
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
        await interaction.client.get_cog("Review").case_action(interaction, self.case_id, self.verb)


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
        await interaction.client.get_cog("Review").resolve_with_reason(interaction, self.case_id, self.verb,
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
        await interaction.client.get_cog("Review").feedback(interaction, self.decision_id, self.kind)


class DisputeModal(discord.ui.Modal, title="Dispute this note"):
    """Asks the member why the note is wrong; the answer becomes a case for moderators."""

    reason = discord.ui.TextInput(label="Why is this note wrong or unfair?", style=discord.TextStyle.paragraph,
                                  min_length=5, max_length=800)

    def __init__(self, decision_id: int):
        super().__init__(custom_id=f"caveat:dispute:{decision_id}")
        self.decision_id = decision_id

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Record the dispute and open a case."""
        await interaction.client.get_cog("Review").dispute(interaction, self.decision_id, self.reason.value)


def case_view(case: dict) -> discord.ui.View | None:
    """The five persistent buttons of an unresolved case (none once it is resolved)."""
    if case["status"] == "resolved":
        return None
    view = discord.ui.View(timeout=None)
    for verb in VERBS:
        view.add_item(CaseButton(case["id"], verb))
    return view


def note_view(decision_id: int) -> discord.ui.View:
    """Helpful / Not helpful / Dispute under a public note."""
    view = discord.ui.View(timeout=None)
    for kind in FEEDBACK:
        view.add_item(FeedbackButton(decision_id, kind))
    return view


class Review(commands.Cog):
    """Posts and updates case cards and carries out moderators' decisions."""

    def __init__(self, bot):
        self.bot = bot
        self.store = bot.store

    async def cog_load(self) -> None:
        """Register the persistent items so old cards and notes keep working."""
        self.bot.add_dynamic_items(CaseButton, ReasonSelect, FeedbackButton)

    async def cog_unload(self) -> None:
        """Unregister the persistent items."""
        self.bot.remove_dynamic_items(CaseButton, ReasonSelect, FeedbackButton)

    # -- cards ---------------------------------------------------------------------------------
    async def publish_card(self, case_id: int, *, alert: bool = False, extra: str | None = None) -> None:
        """Post the case card in the moderators' channel, or update it; an alert pings the on-call role."""
        case = await self.store.case(case_id)
        embed, view = render.case_embed(case, self.bot.policy, extra=extra), case_view(case)
        channel = self.bot.mod_channel()
        if channel is None:
            log.warning("case %s: CAVEAT_MOD_CHANNEL_ID is not set, no card posted", case_id)
            return
        if case.get("card_message_id"):
            await channel.get_partial_message(int(case["card_message_id"])).edit(embed=embed, view=view)
            return
        content, mentions = None, NO_PINGS
        role = self.bot.config.oncall_role_id
        if alert:
            content = f"🚨 Emergency: a member may be in crisis (case #{case_id}). Crisis resources were posted."
            if role:
                content = f"<@&{role}> " + content
                mentions = discord.AllowedMentions(everyone=False, users=False, roles=[discord.Object(role)])
        msg = await channel.send(content=content, embed=embed, view=view, allowed_mentions=mentions)
        await self.store.set_case_card(case_id, str(msg.id))
        await self.store.audit("caveat", "alert_sent" if alert else "case_card_posted", case_id=case_id,
                               post_id=case["post_id"], detail={"message_id": str(msg.id), "pinged_role": bool(alert and role)})

    async def _refresh(self, interaction: discord.Interaction, case: dict) -> None:
        """Show the case's new state on its card (the clicked message or the stored card)."""
        embed, view = render.case_embed(case, self.bot.policy), case_view(case)
        card_id = case.get("card_message_id")
        if interaction.message is not None and card_id and interaction.message.id == int(card_id) \
                and not interaction.response.is_done():
            await interaction.response.edit_message(embed=embed, view=view)
        elif card_id and self.bot.mod_channel() is not None:
            await self.bot.mod_channel().get_partial_message(int(card_id)).edit(embed=embed, view=view)

    # -- moderators' actions -------------------------------------------------------------------
    async def case_action(self, interaction: discord.Interaction, case_id: int, verb: str) -> None:
        """Claim, send note, dismiss, remove or escalate; refused for non-moderators and other holders."""
        if not is_moderator(interaction):
            await interaction.response.send_message("Only moderators (Manage Messages) can act on cases.", ephemeral=True)
            return
        mod = str(interaction.user.id)
        try:
            case = await self.store.case(case_id)
            if case["status"] == "resolved":
                raise CaseConflict(f"case #{case_id} is already resolved ({case['resolution']})", case["resolved_by"])
            if case["status"] == "claimed" and case["claimed_by"] != mod:
                raise CaseConflict(f"case #{case_id} is claimed", case["claimed_by"])
            if verb == "claim":
                case = await self.store.claim(case_id, mod)
            elif verb in ("dismiss", "remove"):
                view = discord.ui.View(timeout=None)
                view.add_item(ReasonSelect(case_id, verb, self.bot.policy.community.reason_codes))
                await interaction.response.send_message(f"Choose a reason to {verb} case #{case_id}.", view=view,
                                                        ephemeral=True)
                return
            elif verb == "note":
                case = await self._send_note(case, mod)
            elif verb == "escalate":
                case = await self.store.resolve(case_id, mod, "escalated")
                await self._escalate(case, mod)
        except CaseNotFound:
            await interaction.response.send_message(f"Case #{case_id} no longer exists.", ephemeral=True)
            return
        except CaseConflict as exc:
            await self._refuse(interaction, exc)
            return
        await self._refresh(interaction, case)

    async def _refuse(self, interaction: discord.Interaction, exc: CaseConflict) -> None:
        holder = f" by <@{exc.holder}>" if exc.holder and str(exc.holder).isdigit() else ""
        await self.store.audit(str(interaction.user.id), "action_refused", detail={"reason": str(exc)})
        await interaction.response.send_message(f"Refused: {exc}{holder}.", ephemeral=True, allowed_mentions=NO_PINGS)

    async def resolve_with_reason(self, interaction: discord.Interaction, case_id: int, verb: str, code: str) -> None:
        """Dismiss or remove with a reason code; Remove deletes the member's post with an audit reason."""
        if not is_moderator(interaction):
            await interaction.response.send_message("Only moderators (Manage Messages) can act on cases.", ephemeral=True)
            return
        if code not in self.bot.policy.community.reason_codes:
            await interaction.response.send_message(f"Unknown reason code '{code}'.", ephemeral=True)
            return
        mod = str(interaction.user.id)
        try:
            case = await self.store.resolve(case_id, mod, "dismissed" if verb == "dismiss" else "removed",
                                            reason_code=code)
        except (CaseConflict, CaseNotFound) as exc:
            await self._refuse(interaction, exc if isinstance(exc, CaseConflict) else CaseConflict(str(exc)))
            return
        await interaction.response.edit_message(content=f"Case #{case_id}: {verb} with reason `{code}`.", view=None)
        if verb == "remove":
            try:
                # The low-level call is the one that carries an audit-log reason (X-Audit-Log-Reason).
                await self.bot.http.delete_message(int(case["channel_id"]), int(case["message_id"]),
                                                   reason=f"Caveat case #{case_id}: {code} (moderator {mod})")
                await self.store.audit(mod, "post_removed", case_id=case_id, post_id=case["post_id"])
            except discord.HTTPException as exc:
                await self.store.audit(mod, "post_remove_failed", case_id=case_id, detail={"status": exc.status})
                await interaction.followup.send(f"Could not delete the post (HTTP {exc.status}); remove it by hand.",
                                                ephemeral=True)
        await self._refresh(interaction, case)

    async def _send_note(self, case: dict, mod: str) -> dict:
        """Post the proposed note under the member's post (once per post), then close the case as sent_note."""
        note = render.proposed_note(case, self.bot.policy)
        if note is None:
            raise CaseConflict(f"case #{case['id']} has no note to send; dismiss or remove it instead")
        if case.get("deleted_at") or not case.get("text"):
            raise CaseConflict(f"the post of case #{case['id']} was deleted")
        if await self.store.claim_reply(case["post_id"], "note"):
            channel = self.bot.get_partial_messageable(int(case["channel_id"]))
            target = channel.get_partial_message(int(case["message_id"]))
            try:
                msg = await target.reply(embed=render.note_embed(note), view=note_view(case["decision_id"]),
                                         allowed_mentions=NO_PINGS, mention_author=False)
            except discord.HTTPException as exc:
                await self.store.release_reply(case["post_id"], "note")
                raise CaseConflict(f"could not post the note (HTTP {exc.status})") from exc
            await self.store.set_reply_message(case["post_id"], "note", str(msg.id))
            await self.store.audit(mod, "note_sent", case_id=case["id"], post_id=case["post_id"],
                                   detail={"note_id": note.id, "message_id": str(msg.id)})
        return await self.store.resolve(case["id"], mod, "sent_note")

    async def _escalate(self, case: dict, mod: str) -> None:
        role = self.bot.config.oncall_role_id
        channel = self.bot.mod_channel()
        if channel is None:
            return
        ping = f"<@&{role}> " if role else ""
        mentions = discord.AllowedMentions(everyone=False, users=False, roles=[discord.Object(role)]) if role else NO_PINGS
        await channel.send(f"{ping}Case #{case['id']} was escalated by <@{mod}>; please take a look.",
                           allowed_mentions=mentions)
        await self.store.audit(mod, "escalation_alert", case_id=case["id"], detail={"pinged_role": bool(role)})

    # -- members' feedback ---------------------------------------------------------------------
    async def feedback(self, interaction: discord.Interaction, decision_id: int, kind: str) -> None:
        """Helpful / Not helpful are stored against the decision; Dispute opens a form."""
        if kind == "dispute":
            await interaction.response.send_modal(DisputeModal(decision_id))
            return
        new = await self.store.add_feedback(decision_id, str(interaction.user.id), kind)
        await self.store.audit(str(interaction.user.id), f"feedback_{kind}", decision_id=decision_id)
        text = "Thanks, your feedback was recorded." if new else "You already gave this feedback."
        await interaction.response.send_message(text, ephemeral=True)

    async def dispute(self, interaction: discord.Interaction, decision_id: int, reason: str) -> None:
        """Store the dispute and put it in front of moderators as a case."""
        user = str(interaction.user.id)
        decision = await self.store.decision(decision_id)
        if decision is None:
            await interaction.response.send_message("That note is no longer on record.", ephemeral=True)
            return
        await self.store.add_feedback(decision_id, user, "dispute", reason)
        post = await self.store.post(decision["post_id"])
        # open_case reads labels, action and severity only; the stored decision provides all three.
        d = SimpleNamespace(labels=tuple(decision["labels"]), action=decision["action"],
                            severity=SEVERITY[decision["action"]])
        case_id = await self.store.open_case(decision["post_id"], decision_id, d, channel_id=post["channel_id"],
                                             community_id=post["community_id"], kind="dispute")
        await self.store.audit(user, "dispute", case_id=case_id, decision_id=decision_id, post_id=decision["post_id"])
        await interaction.response.send_message("Thanks. A moderator will review this note.", ephemeral=True)
        await self.publish_card(case_id, extra=f"<@{user}> disputes the note: {reason}")


async def setup(bot) -> None:
    """Extension entry point."""
    await bot.add_cog(Review(bot))
