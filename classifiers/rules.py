"""Keyword rules compiled once per PolicySet: terms with proximity, regexes (RE2, linear time), exceptions.

Matching is linear in the length of a post: one pass over its words looks each word up in an index of every
rule's terms by their first word (exact words, and the prefixes of `prefix*` terms); a term is paired only with
the `near` words within its window (found by bisection); an exception is tried only on the sentences that hold
a matched span (each found by bisection). The hits are identical to trying every term at every word.

Cost cap: a post longer than `MAX_ASSESSED_CHARS` (20,000 characters: five times Discord's longest message;
a replayed line can be megabytes) has every rule matched on its first `MAX_ASSESSED_CHARS` characters only.
The emergency rules (label `emergency`) still read the whole post, in overlapping windows of that size, so
a crisis at the end of a long post is never missed; `truncation_notice` gives the sentence the decision's
`why` carries for such a post.
"""
from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, replace

import re2

from classifiers.normalize import MAX_ASSESSED_CHARS, Normalized, normalize_for_matching
from policies.schema import Rule

__all__ = ["MAX_ASSESSED_CHARS", "RuleHit", "RuleSet", "Span", "label_rule_features", "truncation_notice"]

# Windows over the part of a long post past the cap, for the emergency rules: each overlaps the one before by
# this many characters, so a crisis phrase (the rules' patterns span at most a few dozen words) cut by one
# window's end lies whole in the next one.
_EMERGENCY_OVERLAP = 2_000

_WORD = re.compile(r"[a-z0-9][a-z0-9'’\-]*")
_SENTENCE = re.compile(r"[^.!?\n]+[.!?\n]*|[.!?\n]+")
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.max_mem = 8 << 20  # a moderator's regex can never take more than 8 MiB


@dataclass(frozen=True)
class Span:
    """A matched stretch of the original post: [start, end) and the text there."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class RuleHit:
    """One rule that matched a post; `suppressed_by` names the exception that cancelled it, if any."""

    rule_id: str
    label: str
    weight: float
    note: str | None
    topic: str | None
    spans: tuple[Span, ...]
    suppressed_by: str | None = None

    @property
    def active(self) -> bool:
        """True when no exception cancelled this hit."""
        return self.suppressed_by is None

    def to_dict(self) -> dict:
        """JSON-friendly form used in stored decisions and CLI output."""
        return {
            "rule": self.rule_id, "label": self.label, "weight": self.weight, "note": self.note,
            "spans": [[s.start, s.end, s.text] for s in self.spans], "suppressed_by": self.suppressed_by,
        }


def _term_matches(term: tuple[str, ...], words: list[str], i: int) -> bool:
    """Does the (possibly multi-word, possibly `prefix*`) term start at word i?"""
    if i + len(term) > len(words):
        return False
    for k, part in enumerate(term):
        w = words[i + k]
        if part.endswith("*"):
            if not w.startswith(part[:-1]):
                return False
        elif w != part and w.rstrip("'’s") != part:
            return False
    return True


class _TermIndex:
    """Every term list of a rule set (each rule's `terms`, each rule's `near`), indexed by first word.

    `find(words)` gives, for each list, where its terms start, in one pass: at each word the first term of the
    list (in policy order) that matches there, exactly as trying every term of every list at every word would.
    """

    def __init__(self, lists: list[list[tuple[str, ...]]]):
        self.lists = lists
        self.exact: dict[str, list[tuple[int, int]]] = {}   # first word -> (list, term) in policy order
        self.prefix: dict[str, list[tuple[int, int]]] = {}  # first word's prefix (of `prefix*`) -> (list, term)
        for li, terms in enumerate(lists):
            for ti, term in enumerate(terms):
                first = term[0]
                if first.endswith("*"):
                    self.prefix.setdefault(first[:-1], []).append((li, ti))
                else:
                    self.exact.setdefault(first, []).append((li, ti))
        self.prefix_lengths = sorted({len(p) for p in self.prefix})

    def find(self, words: list[str]) -> list[list[tuple[int, int]]]:
        """Per list, the (start, end) word positions of its matches, in text order."""
        found: list[list[tuple[int, int]]] = [[] for _ in self.lists]
        if not self.lists:
            return found
        exact, prefix, lengths, lists = self.exact, self.prefix, self.prefix_lengths, self.lists
        for i, w in enumerate(words):
            groups = []
            g = exact.get(w)
            if g:
                groups.append(g)
            stripped = w.rstrip("'’s")
            if stripped != w:
                g = exact.get(stripped)
                if g:
                    groups.append(g)
            for n in lengths:
                if n > len(w):
                    break
                g = prefix.get(w[:n])
                if g:
                    groups.append(g)
            if not groups:
                continue
            candidates = groups[0] if len(groups) == 1 else sorted(set().union(*groups))
            done = -1  # candidates come in (list, term) order: after a list's first match, skip the rest of it
            for li, ti in candidates:
                if li == done:
                    continue
                term = lists[li][ti]
                if _term_matches(term, words, i):
                    found[li].append((i, i + len(term)))
                    done = li
        return found


class CompiledRule:
    """A rule ready to run: split terms and RE2 programs."""

    def __init__(self, rule: Rule):
        self.rule = rule
        self.terms = [tuple(t.split()) for t in rule.terms]
        self.near = [tuple(t.split()) for t in rule.near]
        self.max_near = max((len(t) for t in self.near), default=1)
        self.patterns = [re2.compile(p, _RE2_OPTIONS) for p in rule.patterns]
        self.exceptions = [(p, re2.compile(p, _RE2_OPTIONS)) for p in rule.exceptions]

    def match(self, norm: Normalized, original: str, words: list[tuple[int, int, str]],
              sentences: list[tuple[int, int]], term_at: list[tuple[int, int]],
              near_at: list[tuple[int, int]]) -> RuleHit | None:
        """Return a hit (possibly suppressed) or None; `term_at`/`near_at`: where this rule's terms and near
        words occur (word positions, from the rule set's index)."""
        text = norm.text
        spans: list[tuple[int, int]] = []  # normalized-text spans
        if self.terms:
            if self.near:
                within = self.rule.within
                near_starts = [ns for ns, _ in near_at]
                for ts, te in term_at:
                    # A near word ends after it starts and spans at most max_near words, so every near word
                    # within the window starts in [ts - within - max_near + 1, te + within).
                    lo = bisect_left(near_starts, ts - within - self.max_near + 1)
                    hi = bisect_left(near_starts, te + within)
                    for ns, ne in near_at[lo:hi]:
                        if (ns >= te and ns - te < within) or (ts >= ne and ts - ne < within):
                            spans.append((words[ts][0], words[te - 1][1]))
                            spans.append((words[ns][0], words[ne - 1][1]))
            else:
                spans.extend((words[s][0], words[e - 1][1]) for s, e in term_at)
        for prog in self.patterns:
            for m in prog.finditer(text):
                if m.end() > m.start():
                    spans.append((m.start(), m.end()))
        if not spans:
            return None
        merged: list[tuple[int, int]] = []
        for s, e in sorted(set(spans)):
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
            else:
                merged.append((s, e))
        spans = merged
        suppressed = self._exception_for(text, spans, sentences)
        out = []
        for s, e in spans:
            a, b = norm.span(s, e)
            out.append(Span(a, b, original[a:b]))
        r = self.rule
        return RuleHit(r.id, r.label, r.weight, r.note, r.topic, tuple(out), suppressed)

    def _exception_for(self, text: str, spans, sentences) -> str | None:
        """An exception cancels the hit when it matches in a sentence that holds a matched span.

        `spans` are merged and sorted; `sentences` are in text order and do not overlap. The sentences that
        hold a span start are found by bisection and tried in text order."""
        if not self.exceptions:
            return None
        starts = [s for s, _ in sentences]
        holding: list[int] = []
        for s, _ in spans:
            k = bisect_right(starts, s) - 1
            if k >= 0 and s < sentences[k][1] and (not holding or holding[-1] != k):
                holding.append(k)
        for k in holding:
            s_start, s_end = sentences[k]
            sentence = text[s_start:s_end]
            for source, prog in self.exceptions:
                if prog.search(sentence):
                    return source
        return None


class RuleSet:
    """All rules of a PolicySet, compiled once; `match(text)` returns every hit with spans."""

    def __init__(self, rules: tuple[Rule, ...], max_chars: int = MAX_ASSESSED_CHARS):
        self.rules = [CompiledRule(r) for r in rules]
        self.max_chars = max_chars
        self._all = self._indexed(range(len(self.rules)))
        self._emergency = self._indexed([k for k, r in enumerate(rules) if r.label == "emergency"])
        watched = set()
        for r in rules:
            for t in r.terms + r.near:
                for part in t.split():
                    part = part.rstrip("*")
                    if len(part) >= 3:
                        watched.add(part)
        self.watched = tuple(sorted(watched))

    def _indexed(self, which) -> tuple[_TermIndex, list[tuple[int, int | None, int | None]]]:
        """The term index of the rules `which`, and per rule (rule index, its terms' list, its near words' list)."""
        lists: list[list[tuple[str, ...]]] = []
        plan = []
        for k in which:
            ids = []
            for terms in (self.rules[k].terms, self.rules[k].near):
                ids.append(len(lists) if terms else None)
                if terms:
                    lists.append(terms)
            plan.append((k, ids[0], ids[1]))
        return _TermIndex(lists), plan

    def match(self, text: str) -> list[RuleHit]:
        """Run every rule on the normalized text; hits come back in policy order.

        Past `max_chars` characters only the emergency rules run (see the module docstring): an emergency rule
        that found nothing, or only a suppressed hit, in the head takes the first active hit (else the first
        hit) of the later windows."""
        if len(text) <= self.max_chars:
            return [hit for _, hit in self._match(text, self._all)]
        by_rule = dict(self._match(text[:self.max_chars], self._all))
        overlap = min(_EMERGENCY_OVERLAP, self.max_chars // 2)
        step = self.max_chars - overlap
        for start in range(step, len(text) - overlap, step):
            if all(k in by_rule and by_rule[k].active for k, _, _ in self._emergency[1]):
                break
            for k, hit in self._match(text[start:start + self.max_chars], self._emergency):
                if k not in by_rule or (hit.active and not by_rule[k].active):
                    spans = tuple(Span(s.start + start, s.end + start, s.text) for s in hit.spans)
                    by_rule[k] = replace(hit, spans=spans)
        return [by_rule[k] for k in sorted(by_rule)]

    def _match(self, text: str, indexed) -> list[tuple[int, RuleHit]]:
        """(rule index, hit) for the rules of `indexed` (from `_indexed`) that match `text`, in policy order."""
        index, plan = indexed
        norm = normalize_for_matching(text, self.watched)
        words = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(norm.text)]
        sentences = [(m.start(), m.end()) for m in _SENTENCE.finditer(norm.text)]
        found = index.find([w for _, _, w in words])
        hits = []
        for k, terms_id, near_id in plan:
            hit = self.rules[k].match(norm, text, words, sentences,
                                      found[terms_id] if terms_id is not None else [],
                                      found[near_id] if near_id is not None else [])
            if hit is not None:
                hits.append((k, hit))
        return hits


def truncation_notice(text: str, max_chars: int = MAX_ASSESSED_CHARS) -> str | None:
    """The sentence a decision's `why` carries when `text` is longer than what is assessed in full, else None."""
    if len(text) <= max_chars:
        return None
    return (f"The post is {len(text):,} characters long: the model and the keyword rules read its first "
            f"{max_chars:,}, and only the emergency rules read all of it.")


def label_rule_features(hits: list[RuleHit], labels: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """Per label: (noisy-or of active hits' weights, the strongest suppressed hit's weight).

    The learned rule-model combination reads exactly these two numbers (training and serving share this function).
    """
    keep = {lab: 1.0 for lab in labels}
    suppressed = {lab: 0.0 for lab in labels}
    for hit in hits:
        if hit.weight <= 0 or hit.label not in keep:
            continue
        if hit.active:
            keep[hit.label] *= 1.0 - hit.weight
        else:
            suppressed[hit.label] = max(suppressed[hit.label], hit.weight)
    return {lab: (round(1.0 - keep[lab], 6), suppressed[lab]) for lab in labels}
