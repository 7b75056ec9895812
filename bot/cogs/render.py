"""Embeds built from Decisions, notes and case dicts: what members and moderators see (no I/O here)."""
from __future__ import annotations

from typing import cast

import discord

from bot.cases import proposed_note
from bot.engine import Decision
from bot.storage.rows import CaseRow
from policies.loader import PolicySet
from policies.schema import LABELS, Note

NOTE_COLOR = 0xE3A008
CRISIS_COLOR = 0xD93F0B
STATUS_COLOR = {"open": 0x3B82F6, "claimed": 0x8B5CF6, "resolved": 0x6B7280}
OUTCOME_TEXT = {"sent_note": "caution note sent", "dismissed": "dismissed (false positive)", "removed": "post removed",
                "escalated": "escalated to on-call", "deleted": "post deleted by its author", "expired": "expired"}
WHY_FOOTER = ("Why am I seeing this? Caveat adds sourced context to posts about risky treatments. "
              "It is not medical advice and the post was not removed.")


def clip(text: str, limit: int) -> str:
    """Shorten to `limit` characters with an ellipsis (Discord rejects over-long embed fields)."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def sources_lines(note: Note) -> list[str]:
    """Numbered sources as Markdown links (plain text when a source has no link)."""
    lines = []
    for i, c in enumerate(note.citations, 1):
        title = clip(c.title.rstrip("."), 110)
        head = f"[{title}]({c.link})" if c.link else title
        extra = f" ({c.caveat})" if c.caveat else ""
        year = f", {c.year}" if c.year else ""
        lines.append(f"{i}. {head}: {clip(c.source, 60)}{year}{extra}")
    return lines


def note_embed(note: Note) -> discord.Embed:
    """The public caution note: title, text, numbered sources, footer with note id and 'why am I seeing this'."""
    body = note.text + "\n\n**Sources**\n" + "\n".join(sources_lines(note))
    embed = discord.Embed(title=clip(note.title, 256), description=clip(body, 4000), color=NOTE_COLOR)
    embed.set_footer(text=f"Note {note.id} · {WHY_FOOTER}")
    return embed


def resources_embed(resources) -> discord.Embed:
    """The emergency reply: crisis lines for the community's locale."""
    lines = [f"**{r.name}**: {r.contact}" + (f" · {r.url}" if r.url else "") for r in resources]
    embed = discord.Embed(title="You are not alone. Help is available right now",
                          description="\n".join(lines) + "\n\nOur moderators have been alerted and will check in.",
                          color=CRISIS_COLOR)
    embed.set_footer(text="Caveat · crisis resources")
    return embed


def rules_lines(rules: list[dict]) -> list[str]:
    """Rules fired, with the words they matched (set-aside hits marked)."""
    out = []
    for hit in rules:
        if not hit.get("weight"):
            continue
        words = ", ".join(repr(s[2]) for s in hit.get("spans", []) if s[2]) or "(text purged)"
        aside = f" (set aside: {hit['suppressed_by']})" if hit.get("suppressed_by") else ""
        out.append(f"`{hit['rule']}` → {hit['label']} w={hit['weight']:g}: {words}{aside}")
    return out


def status_line(case: CaseRow) -> str:
    """Open, claimed by whom, or the outcome with reason code and moderator."""
    if case["status"] == "resolved":
        reason = f" · reason `{case['reason_code']}`" if case.get("reason_code") else ""
        who = case.get("resolved_by") or "?"
        by = f" by <@{who}>" if str(who).isdigit() else f" by {who}"
        resolution = cast(str, case["resolution"])  # set by every way a case is resolved
        return f"**Resolved: {OUTCOME_TEXT.get(resolution, resolution)}**{reason}{by}"
    if case["status"] == "claimed":
        return f"Claimed by <@{case['claimed_by']}>"
    return "Open: waiting for a moderator"


def case_embed(case: CaseRow, policy: PolicySet, *, extra: str | None = None) -> discord.Embed:
    """The moderators' case card: excerpt and jump link, author, labels, rules, proposed note, versions, status."""
    kind = {"shadow": "[shadow] ", "dispute": "[dispute] ", "replay": "[replayed] "}.get(case.get("kind") or "", "")
    urgent = "🚨 " if case.get("action") == "escalate" else ""
    title = f"{urgent}{kind}Case #{case['id']} · {case.get('label') or 'no label'} · {case.get('action')}"
    if text := case.get("text"):
        excerpt = "> " + clip(text, 500).replace("\n", "\n> ")
    else:
        excerpt = "*(post deleted or purged: text no longer stored)*"
    if case.get("url"):
        excerpt += f"\n[Jump to post]({case['url']})"
    embed = discord.Embed(title=clip(title, 256), description=excerpt,
                          color=CRISIS_COLOR if urgent else STATUS_COLOR.get(case["status"], 0x6B7280))
    author = f"<@{case['author_id']}>" + (f" ({case['author_name']})" if case.get("author_name") else "")
    embed.add_field(name="Author", value=clip(author, 1024), inline=True)
    scores = case.get("scores") or {}
    labels = case.get("labels") or []
    embed.add_field(name="Labels", value=", ".join(f"{lab} {scores.get(lab, 0):.2f}" for lab in labels) or "none",
                    inline=True)
    embed.add_field(name="Scores", value=" · ".join(f"{lab} {scores.get(lab, 0):.2f}" for lab in LABELS), inline=False)
    rules = rules_lines((case.get("detail") or {}).get("rules", []))
    embed.add_field(name="Rules fired", value=clip("\n".join(rules) or "none (model only)", 1024), inline=False)
    note = proposed_note(policy, case)
    embed.add_field(name="Proposed note", value=f"`{note.id}`: {clip(note.title, 200)}" if note else "none",
                    inline=False)
    if extra:
        embed.add_field(name="Dispute", value=clip(extra, 1024), inline=False)
    embed.add_field(name="Status", value=status_line(case), inline=False)
    embed.set_footer(text=f"model {case.get('model_version')} · policy {case.get('policy_version')}")
    return embed


def decision_embed(text: str, d: Decision) -> discord.Embed:
    """The full explanation of a dry run (`/caveat test`)."""
    embed = discord.Embed(title=f"Dry run: {d.action}", description="> " + clip(text, 800), color=NOTE_COLOR)
    embed.add_field(name="Labels", value=", ".join(f"{lab} {d.scores[lab]:.2f}" for lab in d.labels) or "none (benign)",
                    inline=False)
    embed.add_field(name="Scores", value=" · ".join(f"{lab} {d.scores.get(lab, 0):.2f}" for lab in LABELS), inline=False)
    rules = rules_lines([h.to_dict() for h in d.rule_hits])
    embed.add_field(name="Rules", value=clip("\n".join(rules) or "none", 1024), inline=False)
    if d.note:
        embed.add_field(name=f"Note `{d.note.id}`", value=clip(d.note.title + "\n" + "\n".join(sources_lines(d.note)), 1024),
                        inline=False)
    if d.resources:
        embed.add_field(name="Crisis resources", value=clip("\n".join(f"{r.name}: {r.contact}" for r in d.resources), 1024),
                        inline=False)
    embed.add_field(name="Why", value=clip(d.why, 1024), inline=False)
    embed.set_footer(text=f"model {d.model_version} · policy {d.policy_version} · nothing was stored or posted")
    return embed


def stats_embed(stats: dict) -> discord.Embed:
    """Cases by label and outcome, notes sent, and note precision as judged by moderators."""
    def kv(d: dict) -> str:
        return "\n".join(f"{k}: {v}" for k, v in sorted(d.items())) or "none"
    precision = stats.get("note_precision")
    embed = discord.Embed(title="Caveat stats", color=STATUS_COLOR["open"])
    embed.add_field(name="Cases by label", value=kv(stats.get("cases_by_label", {})), inline=True)
    embed.add_field(name="Cases by outcome", value=kv(stats.get("cases_by_outcome", {})), inline=True)
    embed.add_field(name="Notes sent", value=str(stats.get("notes_sent", 0)), inline=True)
    embed.add_field(name="Note precision (judged by moderators)",
                    value="not judged yet" if precision is None else f"{precision:.0%} of {stats.get('notes_judged')}",
                    inline=True)
    embed.add_field(name="Open cases", value=str(stats.get("open_cases", 0)), inline=True)
    return embed


def settings_embed(config) -> discord.Embed:
    """This server's Caveat settings (`/caveat setup`)."""
    def mention(kind: str, value: str | None) -> str:
        return f"<{kind}{value}>" if value else "not set"
    embed = discord.Embed(title="Caveat settings for this server", color=STATUS_COLOR["open"])
    embed.add_field(name="Moderators' channel", value=mention("#", config.mod_channel_id), inline=True)
    embed.add_field(name="On-call role", value=mention("@&", config.oncall_role_id), inline=True)
    embed.add_field(name="Mode", value="shadow (records only, no public notes)" if config.shadow_mode
                    else "live (posts notes publicly)", inline=False)
    embed.add_field(name="Crisis resources locale", value=config.locale, inline=True)
    embed.add_field(name="Note language", value=config.note_language, inline=True)
    embed.add_field(name="Re-alert unattended emergencies after",
                    value=f"{config.realert_minutes:g} min" if config.realert_minutes else "off", inline=True)
    return embed
