"""Moderator-facing statistics and the export of moderator outcomes as labeled examples."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

from bot.storage.base import StoreBase

# Outcomes that confirm the flag was right, and the one that says it was a false positive.
CONFIRMING = ("sent_note", "removed", "escalated")
REJECTING = ("dismissed",)


class StatsMixin(StoreBase):
    """Store methods that summarize cases and decisions."""

    async def stats(self, *, community: str) -> dict:
        """One community's cases by label and outcome, notes sent, judged note precision, per-rule counts.

        Replayed history (kind 'replay') is not counted: it never happened live."""
        c = (community,)
        by_label: Counter[str] = Counter()
        by_outcome: Counter[str] = Counter()
        for r in await self._all("SELECT COALESCE(label, 'none') AS label, COALESCE(resolution, status) AS outcome,"
                                 " COUNT(*) AS n FROM cases WHERE community_id=? AND kind != 'replay' GROUP BY 1, 2", c):
            by_label[r["label"]] += r["n"]
            by_outcome[r["outcome"]] += r["n"]
        notes_sent = await self._count("SELECT COUNT(*) AS n FROM replies r JOIN posts p ON p.id = r.post_id"
                                       " WHERE r.kind='note' AND r.message_id IS NOT NULL AND p.community_id=?", c)
        judged = await self._all(
            "SELECT c.resolution FROM cases c JOIN decisions d ON d.id=c.decision_id"
            " WHERE d.action IN ('note', 'note_and_queue') AND c.status='resolved' AND c.community_id=?"
            " AND c.kind != 'replay'", c)
        good = sum(1 for r in judged if r["resolution"] in CONFIRMING)
        bad = sum(1 for r in judged if r["resolution"] in REJECTING)
        rules: dict[str, dict[str, Any]] = defaultdict(lambda: {"hits": 0, "dismissed": 0, "confirmed": 0})
        for r in await self._all("SELECT d.detail, c.resolution FROM decisions d JOIN posts p ON p.id = d.post_id"
                " LEFT JOIN cases c ON c.decision_id=d.id WHERE p.community_id=? AND d.shadow != 2", c):
            for hit in json.loads(r["detail"]).get("rules", []):
                if hit.get("suppressed_by") or not hit.get("weight"):
                    continue
                entry = rules[hit["rule"]]
                entry["hits"] += 1
                if r["resolution"] in REJECTING:
                    entry["dismissed"] += 1
                elif r["resolution"] in CONFIRMING:
                    entry["confirmed"] += 1
        for entry in rules.values():
            judged_n = entry["dismissed"] + entry["confirmed"]
            entry["dismiss_rate"] = round(entry["dismissed"] / judged_n, 3) if judged_n else None
        per_day = [dict(r) for r in await self._all(
            "SELECT substr(created_at, 1, 10) AS day, COALESCE(label, 'none') AS label, COUNT(*) AS n"
            " FROM cases WHERE community_id=? AND kind != 'replay' GROUP BY 1, 2 ORDER BY 1", c)]
        return {
            "cases_by_label": dict(by_label), "cases_by_outcome": dict(by_outcome), "notes_sent": notes_sent,
            "notes_judged": good + bad, "note_precision": round(good / (good + bad), 3) if good + bad else None,
            "rules": dict(sorted(rules.items())), "cases_per_day": per_day,
            "open_cases": await self.count_cases(community=community),
        }

    async def export_feedback(self) -> list[dict]:
        """Moderator outcomes as labeled examples for retraining: {text, label, source, case_id}."""
        out = []
        rows = await self._all(
            "SELECT c.id, c.label, c.resolution, c.reason_code, p.text FROM cases c JOIN posts p ON p.id=c.post_id"
            " WHERE c.status='resolved' AND p.text IS NOT NULL AND c.resolution IN (?,?,?,?) ORDER BY c.id",
            CONFIRMING + REJECTING)
        for r in rows:
            label = "benign" if r["resolution"] in REJECTING else (r["label"] or "benign")
            out.append({"id": f"case-{r['id']}", "text": r["text"], "label": label,
                        "source": f"moderator:{r['resolution']}", "reason_code": r["reason_code"]})
        return out
