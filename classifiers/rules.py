"""Keyword rules compiled once per PolicySet: terms with proximity, regexes (RE2, linear time), exceptions."""
from __future__ import annotations

import re
from dataclasses import dataclass

import re2

from classifiers.normalize import Normalized, normalize_for_matching
from policies.schema import Rule

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


class CompiledRule:
    """A rule ready to run: split terms and RE2 programs."""

    def __init__(self, rule: Rule):
        self.rule = rule
        self.terms = [tuple(t.split()) for t in rule.terms]
        self.near = [tuple(t.split()) for t in rule.near]
        self.patterns = [re2.compile(p, _RE2_OPTIONS) for p in rule.patterns]
        self.exceptions = [(p, re2.compile(p, _RE2_OPTIONS)) for p in rule.exceptions]

    def _find_terms(self, terms, words) -> list[tuple[int, int]]:
        found = []
        for i in range(len(words)):
            for t in terms:
                if _term_matches(t, words, i):
                    found.append((i, i + len(t)))
                    break
        return found

    def match(self, norm: Normalized, original: str, words: list[tuple[int, int, str]],
              sentences: list[tuple[int, int]]) -> RuleHit | None:
        """Return a hit (possibly suppressed) or None."""
        text = norm.text
        spans: list[tuple[int, int]] = []  # normalized-text spans
        if self.terms:
            tokens = [w for _, _, w in words]
            term_at = self._find_terms(self.terms, tokens)
            if self.near:
                near_at = self._find_terms(self.near, tokens)
                within = self.rule.within
                for ts, te in term_at:
                    for ns, ne in near_at:
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
        """An exception cancels the hit when it matches in a sentence that holds a matched span."""
        if not self.exceptions:
            return None
        for s_start, s_end in sentences:
            if not any(s_start <= s < s_end for s, _ in spans):
                continue
            sentence = text[s_start:s_end]
            for source, prog in self.exceptions:
                if prog.search(sentence):
                    return source
        return None


class RuleSet:
    """All rules of a PolicySet, compiled once; `match(text)` returns every hit with spans."""

    def __init__(self, rules: tuple[Rule, ...]):
        self.rules = [CompiledRule(r) for r in rules]
        watched = set()
        for r in rules:
            for t in r.terms + r.near:
                for part in t.split():
                    part = part.rstrip("*")
                    if len(part) >= 3:
                        watched.add(part)
        self.watched = tuple(sorted(watched))

    def match(self, text: str) -> list[RuleHit]:
        """Run every rule on the normalized text; hits come back in policy order."""
        norm = normalize_for_matching(text, self.watched)
        words = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(norm.text)]
        sentences = [(m.start(), m.end()) for m in _SENTENCE.finditer(norm.text)]
        hits = []
        for rule in self.rules:
            hit = rule.match(norm, text, words, sentences)
            if hit is not None:
                hits.append(hit)
        return hits


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
