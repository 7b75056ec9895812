"""Property tests (hypothesis): the normalizer, the rule matcher, the policy loader and both replay importers.

Every text here is generated: rule terms, filler words and odd characters, never a member's post.
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st

from bot.replay import load_export
from classifiers.normalize import _INVISIBLE, clean_text, model_input, normalize_for_matching, normalize_text
from classifiers.rules import _SENTENCE, _WORD, RuleHit, RuleSet, Span, _term_matches
from policies.loader import DEFAULT_POLICY_DIR, PolicyError, load_policy

# derandomize: the same examples on every run, so CI never turns red by chance; widen locally with a seed.
FAST = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(FAST, max_examples=25)
IMPORTS = settings(SLOW, max_examples=80)

POLICY = load_policy()
RULES = RuleSet(POLICY.rules)

# Characters that exercise every branch of the normalizer: lone and paired surrogate halves, invisibles,
# combining marks (zalgo), homoglyphs, leetspeak, characters NFKC expands, line separators.
ODD = ["\ud800", "\udfff", "\ud83d", "\ude00", "\u200b", "\u200d", "\ufeff", "\u00ad", "\u0301", "\u0336",
       "\u0430", "\u043e", "\u03b1", "\u0131", "0", "1", "3", "4", "@", "$", "!", "|", "\u20ac", "\ufdfa",
       "\u2028", "\x00", "\u0130", "\ufb01", "\uff52", " ", "\n", ".", "?", "'", "\u2019", "-"]
SURROGATE_EXAMPLES = ["I want to kill myself tonight \ud800", "\udfff", "\ud83d\ude00 r\u200bapa", "a\ud83d",
                      "r\u0301a\u0336p\u0430 \ude00 on my wound"]
ANY_TEXT = st.text(st.one_of(st.characters(exclude_categories=()), st.sampled_from(ODD)), max_size=300)

# Words from the shipped rules (terms, near words, crisis and seller phrases, exception words) and filler.
TERM_WORDS = sorted({w.rstrip("*") + ("s" if w.endswith("*") else "") for r in POLICY.rules
                     for w in r.terms + r.near})
PHRASES = ["kill myself", "want to die", "took all the pills", "chest pain", "dm me for a source", "i sell",
           "use my code", "don't", "never", "is it safe", "?", "years ago", "not", "no evidence", "study",
           "r@pamycin", "s1rolimus", "r a p a m y c i n", "ex\u200bosomes", "sir0limus", "rapa's", "wounds'"]
FILLER = ["weather", "garden", "coffee", "morning", "walked", "friends", "lovely", "music", "kitchen", "window",
          "yellow", "bicycle", "sunday", "pancakes", "library", "puzzle"]
SEPARATORS = [" ", " ", " ", "  ", ". ", "? ", "! ", "\n", ", ", " - ", "... "]
RULE_TEXT = st.lists(st.tuples(st.sampled_from(TERM_WORDS + PHRASES + FILLER), st.sampled_from(SEPARATORS)),
                     max_size=120).map(lambda parts: "".join(w + s for w, s in parts))


# ---------------------------------------------------------------------------------------------- normalizer

def with_surrogate_examples(test):
    """Always try the lone-surrogate texts, besides what hypothesis generates."""
    for text in reversed(SURROGATE_EXAMPLES):
        test = example(text)(test)
    return test


@FAST
@given(ANY_TEXT)
@with_surrogate_examples
def test_normalizer_never_raises_and_keeps_offsets(text):
    norm = normalize_for_matching(text, RULES.watched)
    assert len(norm.origin) == len(norm.text)
    assert all(0 <= o < len(text) for o in norm.origin)
    assert list(norm.origin) == sorted(norm.origin)  # offsets never go backwards
    assert len(norm.text) <= 18 * len(text)  # NFKC expands one character to at most 18 (U+FDFA)
    for start in range(0, len(norm.text), 7):
        a, b = norm.span(start, min(start + 5, len(norm.text)))
        assert 0 <= a < b <= len(text)


@FAST
@given(ANY_TEXT)
@with_surrogate_examples
def test_normalized_text_has_no_invisibles_marks_or_surrogates(text):
    for out in (normalize_for_matching(text, RULES.watched).text, model_input(text, RULES.watched),
                normalize_text(text)):
        assert not any(ord(c) in _INVISIBLE for c in out)
        assert not any(0xD800 <= ord(c) <= 0xDFFF for c in out)
        out.encode("utf-8")  # storable, printable, matchable by RE2
    assert not any(unicodedata.combining(c) for c in normalize_for_matching(text, RULES.watched).text)


@FAST
@given(ANY_TEXT)
@with_surrogate_examples
def test_clean_text_removes_every_surrogate_and_is_idempotent(text):
    cleaned = clean_text(text)
    cleaned.encode("utf-8")
    assert clean_text(cleaned) == cleaned
    assert len(cleaned) <= len(text)  # one U+FFFD per lone half, one character per split pair
    if not re.search("[\ud800-\udfff]", text):
        assert cleaned is text


@FAST
@given(ANY_TEXT)
@with_surrogate_examples
def test_light_normalization_is_idempotent(text):
    once = normalize_text(text)
    assert normalize_text(once) == once


@FAST
@given(ANY_TEXT)
@with_surrogate_examples
def test_model_input_is_idempotent_on_its_own_output(text):
    once = model_input(text, RULES.watched)
    assert model_input(once, RULES.watched) == once


# ---------------------------------------------------------------------------------------------- rule matcher

def reference_match(rules: RuleSet, text: str) -> list[RuleHit]:
    """The matcher before issue 21, kept as the definition: every term tried at every word, every term paired
    with every near word, every sentence tested against every span (quadratic; for short texts only)."""
    norm = normalize_for_matching(text, rules.watched)
    words = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(norm.text)]
    sentences = [(m.start(), m.end()) for m in _SENTENCE.finditer(norm.text)]
    tokens = [w for _, _, w in words]

    def find(terms):
        found = []
        for i in range(len(tokens)):
            for t in terms:
                if _term_matches(t, tokens, i):
                    found.append((i, i + len(t)))
                    break
        return found

    hits = []
    for cr in rules.rules:
        spans = []
        if cr.terms:
            term_at = find(cr.terms)
            if cr.near:
                near_at = find(cr.near)
                for ts, te in term_at:
                    for ns, ne in near_at:
                        if (ns >= te and ns - te < cr.rule.within) or (ts >= ne and ts - ne < cr.rule.within):
                            spans += [(words[ts][0], words[te - 1][1]), (words[ns][0], words[ne - 1][1])]
            else:
                spans += [(words[s][0], words[e - 1][1]) for s, e in term_at]
        for prog in cr.patterns:
            spans += [(m.start(), m.end()) for m in prog.finditer(norm.text) if m.end() > m.start()]
        if not spans:
            continue
        merged = []
        for s, e in sorted(set(spans)):
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
            else:
                merged.append((s, e))
        suppressed = None
        for s_start, s_end in sentences:
            if suppressed or not any(s_start <= s < s_end for s, _ in merged):
                continue
            suppressed = next((src for src, prog in cr.exceptions if prog.search(norm.text[s_start:s_end])), None)
        out = tuple(Span(a, b, text[a:b]) for a, b in (norm.span(s, e) for s, e in merged))
        r = cr.rule
        hits.append(RuleHit(r.id, r.label, r.weight, r.note, r.topic, out, suppressed))
    return hits


@FAST
@given(RULE_TEXT)
def test_linear_matcher_equals_the_reference(text):
    assert RULES.match(text) == reference_match(RULES, text)


@FAST
@given(st.one_of(ANY_TEXT, RULE_TEXT, st.tuples(RULE_TEXT, ANY_TEXT).map("".join)))
@example(SURROGATE_EXAMPLES[0])
@example(SURROGATE_EXAMPLES[1])
@example(SURROGATE_EXAMPLES[2])
@example(SURROGATE_EXAMPLES[3])
@example(SURROGATE_EXAMPLES[4])
def test_matcher_never_raises_and_spans_lie_in_the_text(text):
    hits = RULES.match(text)
    order = [r.id for r in POLICY.rules]
    assert [order.index(h.rule_id) for h in hits] == sorted(order.index(h.rule_id) for h in hits)
    for h in hits:
        assert h.spans
        for s in h.spans:
            assert 0 <= s.start < s.end <= len(text)
            assert s.text == text[s.start:s.end]


def test_filler_alone_matches_nothing():
    assert RULES.match(" ".join(FILLER * 3)) == []


@FAST
@given(RULE_TEXT, st.integers(min_value=50, max_value=600), st.booleans())
def test_unrelated_filler_far_away_keeps_every_hit(text, n, before):
    hits = RULES.match(text)
    assume(hits)
    filler = " ".join(FILLER[i % len(FILLER)] for i in range(n))
    if before:
        padded, shift = filler + "\n" + text, len(filler) + 1
    else:
        padded, shift = text + "\n" + filler, 0
    assert len(padded) <= RULES.max_chars
    after = {h.rule_id: h for h in RULES.match(padded)}
    for h in hits:
        assert h.rule_id in after
        assert after[h.rule_id].suppressed_by == h.suppressed_by
        assert [(s.start - shift, s.end - shift, s.text) for s in after[h.rule_id].spans] == \
               [(s.start, s.end, s.text) for s in h.spans]


# ---------------------------------------------------------------------------------------------- policy loader

POLICY_FILES = sorted(str(p.relative_to(DEFAULT_POLICY_DIR)) for p in Path(DEFAULT_POLICY_DIR).rglob("*.yaml"))
TOKENS = ["-1", "[]", "{}", "null", "''", "1e400", "*warning", "&a x", ":", "yes", "~", "[1, {a: b}]", "- x",
          "? x", "\"\\ud800\"", ".nan", "0x10", "\"\"", "true", "'rapa*'", "\"(\"", "escalate", "2.0", "-0.5"]
# Loader bugs found by this test (policies/loader.py is not changed here; see the issue 21 report): they are
# tolerated below, by exact kind, until the loader turns them into PolicyErrors; remove each entry then.
# Each is (exception, the loader function it escaped from).
KNOWN_LOADER_BUGS: set[tuple[str, str]] = set()  # none left: every mutation loads or gives PolicyError

MUTATION = st.tuples(st.sampled_from(POLICY_FILES),
                     st.sampled_from(["delete", "duplicate", "swap", "indent", "dedent", "truncate", "token",
                                      "bytes"]),
                     st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=10_000),
                     st.sampled_from(TOKENS), st.binary(min_size=1, max_size=4))


def mutate(data: bytes, kind: str, i: int, j: int, token: str, junk: bytes) -> bytes:
    lines = data.split(b"\n")
    i, j = i % len(lines), j % len(lines)
    if kind == "delete":
        del lines[i]
    elif kind == "duplicate":
        lines.insert(i, lines[i])
    elif kind == "swap":
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "indent":
        lines[i] = b"  " + lines[i]
    elif kind == "dedent":
        lines[i] = lines[i].lstrip()
    elif kind == "truncate":
        lines = lines[:i]
    elif kind == "token":
        line = lines[i]
        cut = line.find(b":") + 1 if b":" in line else len(line)
        lines[i] = line[:cut] + b" " + token.encode()
    else:
        lines[i] = lines[i][:j % (len(lines[i]) + 1)] + junk + lines[i][j % (len(lines[i]) + 1):]
    return b"\n".join(lines)


@settings(SLOW, phases=[Phase.explicit, Phase.generate])  # each example copies and loads a policy: no shrinking
@given(MUTATION)
def test_a_mutated_policy_loads_or_raises_policy_error_with_file_and_line(mutation):
    rel, kind, i, j, token, junk = mutation
    root = Path(tempfile.mkdtemp(prefix="caveat-policy-"))
    try:
        dst = root / "policies"
        shutil.copytree(DEFAULT_POLICY_DIR, dst, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
        (dst / rel).write_bytes(mutate((dst / rel).read_bytes(), kind, i, j, token, junk))
        try:
            load_policy(dst)
        except PolicyError as exc:
            assert exc.issues
            for issue in exc.issues:
                assert issue.file and isinstance(issue.line, int) and issue.line >= 0
                assert re.match(r".+:\d+: .", str(issue))
        except Exception as exc:  # anything else must be a known, reported loader bug
            import traceback
            where = [f.name for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith("loader.py")][-1]
            assert (type(exc).__name__, where) in KNOWN_LOADER_BUGS, f"{type(exc).__name__} in {where}: {exc}"
    finally:
        shutil.rmtree(root)


# ---------------------------------------------------------------------------------------------- importers

JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=False),
                      st.text(st.one_of(st.characters(exclude_categories=()), st.sampled_from(ODD)), max_size=30))
JSON_VALUE = st.recursive(JSON_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                          max_leaves=12)
ID = st.one_of(st.integers(0, 10**6), st.text("0123456789abc", min_size=1, max_size=6), JSON_VALUE)
TEXT = st.one_of(RULE_TEXT, st.text(st.one_of(st.characters(exclude_categories=()), st.sampled_from(ODD)),
                                    max_size=60), JSON_VALUE)
TIME = st.one_of(st.none(), st.just("2026-11-01T10:00:00+00:00"), st.just("2026-11-01T10:00:00Z"), JSON_VALUE)
AUTHOR = st.one_of(st.none(), JSON_VALUE,
                   st.fixed_dictionaries({}, optional={"id": ID, "name": TEXT, "isBot": JSON_LEAF}))
MESSAGE = st.one_of(JSON_VALUE, st.fixed_dictionaries(
    {}, optional={"id": ID, "content": TEXT, "author": AUTHOR, "timestamp": TIME, "type": JSON_LEAF}))
EXPORT = st.fixed_dictionaries(
    {"messages": st.one_of(st.lists(MESSAGE, max_size=6), JSON_VALUE)},
    optional={"guild": st.one_of(JSON_VALUE, st.fixed_dictionaries({}, optional={"id": ID, "name": TEXT})),
              "channel": st.one_of(JSON_VALUE, st.fixed_dictionaries({}, optional={"id": ID, "name": TEXT}))})
ROW = st.fixed_dictionaries({}, optional={"id": ID, "text": TEXT, "channel": ID, "author": ID, "timestamp": TIME})
LINE = st.one_of(ROW.map(lambda r: json.dumps(r).encode()), JSON_VALUE.map(lambda v: json.dumps(v).encode()),
                 st.binary(max_size=20), st.just(b""), st.just(b'{"text": "caf\xe9"}'))

WORKDIR = Path(tempfile.mkdtemp(prefix="caveat-import-"))


def _check_import(path: Path) -> None:
    try:
        posts = load_export(str(path))
    except ValueError as exc:
        assert str(exc).startswith(str(path)), str(exc)
        return
    keys = [p.message_id for p in posts]
    assert len(set(keys)) == len(keys)
    for p in posts:
        if p.platform == "discord":
            assert p.text.strip()  # the exporter skips empty messages
        for field in (p.message_id, p.channel_id, p.author_id, p.author_name, p.channel_name, p.text,
                      p.community_id):
            assert isinstance(field, str)
            field.encode("utf-8")  # storable in SQLite, printable
        assert p.message_id


@IMPORTS
@example({"messages": [{"id": "1", "content": 5}]}, True)
@example({"messages": [{"id": [1], "content": "hi", "author": "bob"}]}, True)
@example({"messages": [{"id": "1", "content": "hi", "author": {"id": "2", "isBot": "yes"}, "timestamp": 5}]}, True)
@example({"messages": "all of them", "channel": ["x"]}, True)
@example({"messages": [{"id": "1", "content": "I want to die \ud800"}], "guild": {"id": "\udfff"}}, True)
@example({"messages": [{"id": "1", "content": "hi"}, {"id": 1, "content": "again"}]}, True)
@given(EXPORT, st.booleans())
def test_exporter_json_gives_posts_or_a_value_error_naming_the_file(export, ascii_only):
    path = WORKDIR / "export.json"
    path.write_bytes(json.dumps(export, ensure_ascii=True).encode() if ascii_only
                     else json.dumps(export, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    _check_import(path)


@IMPORTS
@example([b'{"text": "hi", "id": [1]}'])
@example([b'{"text": "hi", "timestamp": 5}'])
@example([b'{"text": "caf\xe9"}'])
@example([b'{"text": "a"}', b'{"text": "b", "id": 1}', b'{"text": "c", "id": "1"}'])
@example([b'{"text": "one\xe2\x80\xa8two"}'])
@given(st.lists(LINE, max_size=8))
def test_json_lines_give_posts_or_a_value_error_naming_the_file(lines):
    path = WORKDIR / "posts.jsonl"
    path.write_bytes(b"\n".join(lines))
    _check_import(path)


@pytest.fixture(scope="module", autouse=True)
def _cleanup_workdir():
    yield
    shutil.rmtree(WORKDIR, ignore_errors=True)
