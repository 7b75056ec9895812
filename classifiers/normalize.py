"""Text normalization for matching: NFKC, case, invisible characters, zalgo, homoglyphs, leetspeak.

Every function returns the normalized text together with an offset map (`origin[i]` is the index in
the original text of normalized character i), so rule hits can be shown as spans of what the member wrote.

Lone surrogates ("\\ud800", which a JSON escape or a broken client can put in a str) cannot be encoded as
UTF-8, so RE2, SQLite, JSON and printing would fail on them: `clean_text` replaces them with U+FFFD at the
boundaries where posts enter (replay, `caveat check`), and the normalizers here read each one as U+FFFD, so
assessing a post never fails on one (offsets still point into the text as given).

Cost cap: the model reads at most `MAX_ASSESSED_CHARS` characters of a post (`model_input`); the keyword rules
read the same head, and only the emergency rules read the rest (see classifiers/rules.py).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Characters that render as nothing and are used to split watched words (ZWSP, ZWNJ, ZWJ, word joiner, BOM, soft hyphen...).
_INVISIBLE = {0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x00AD, 0x180E, 0x2061, 0x2062, 0x2063, 0x2064, 0x034F}

# Cyrillic and Greek letters that look like Latin ones (after lower-casing).
_HOMOGLYPHS = {
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ɡ": "g", "ӏ": "l",
    "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u",
    "χ": "x", "ω": "w", "ı": "i",
}

# Leetspeak substitutions, applied only to tokens that then contain a watched term.
_LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i", "|": "l", "€": "e"}

# What one post may cost: 20,000 characters is five times Discord's longest message (4,000 with Nitro) and
# longer than nearly every forum post; a replayed line can be megabytes. The model reads this many characters
# (its tokenizer keeps far fewer anyway), and so do the keyword rules; see classifiers/rules.py for the rest.
MAX_ASSESSED_CHARS = 20_000

_SURROGATE = re.compile("[\ud800-\udfff]")
_LEET_CHARS = re.compile("[" + re.escape("".join(_LEET)) + "]")
_TOKEN = re.compile(r"[^\s]+")
# Letters spaced or dotted apart: "r a p a m y c i n", "s.i.r.o.l.i.m.u.s" (4+ letters).
_SPACED = re.compile(r"(?<![\w])(?:[a-z0-9@$][ .\-_*·]{1,2}){3,}[a-z0-9@$](?![\w])")


@dataclass(frozen=True)
class Normalized:
    """Normalized text plus, for each of its characters, the index of the original character."""

    text: str
    origin: tuple[int, ...]

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Map a [start, end) span of the normalized text back to the original text."""
        if start >= len(self.origin):
            return (self.origin[-1] + 1, self.origin[-1] + 1) if self.origin else (0, 0)
        return self.origin[start], self.origin[max(start, end - 1)] + 1


def clean_text(text: str) -> str:
    """`text` with every surrogate code point (never valid in UTF-8) replaced by U+FFFD, so it can be stored,
    printed and matched; a proper surrogate pair left split in a str becomes the character it encodes.
    Text without surrogates comes back as the same object."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _base_chars(text: str) -> tuple[list[str], list[int]]:
    """NFKC, lower-case, drop invisibles and combining marks (zalgo), fold homoglyphs; keep origins."""
    if text.isascii():  # the common case: NFKC/NFKD are the identity, nothing is invisible, combining or a homoglyph
        return list(text.lower()), list(range(len(text)))
    out: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        if ch < "\x80":
            out.append(ch.lower())
            origin.append(i)
            continue
        if ord(ch) in _INVISIBLE:
            continue
        if "\ud800" <= ch <= "\udfff":  # a lone surrogate: read as the replacement character, keep its offset
            ch = "\ufffd"
        for c in unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", ch)):
            if unicodedata.combining(c):
                continue
            c = c.lower()
            c = _HOMOGLYPHS.get(c, c)
            for cc in c:
                out.append(cc)
                origin.append(i)
    return out, origin


def normalize_text(text: str) -> str:
    """Light normalization for the model: NFKC, invisible characters and zalgo marks removed."""
    kept = (c for c in unicodedata.normalize("NFKC", clean_text(text)) if ord(c) not in _INVISIBLE)
    return "".join(c for c in kept if not unicodedata.combining(c)).strip()


def model_input(text: str, watched: tuple[str, ...] = ()) -> str:
    """What the classifier reads: the rules' normalized text (homoglyphs, zalgo, leetspeak in watched terms folded).

    Serving and training both call this with the rule set's watched terms, so a disguised copy of a post
    is scored as the post itself. Only the first `MAX_ASSESSED_CHARS` characters are read.
    """
    return normalize_for_matching(text[:MAX_ASSESSED_CHARS], watched).text.strip()


def normalize_for_matching(text: str, watched: tuple[str, ...] = ()) -> Normalized:
    """Full normalization for rules; leetspeak and spaced-out letters are folded only into watched terms."""
    chars, origin = _base_chars(text)
    base = "".join(chars)

    # Spaced-out words: join them only when the joined letters form a watched term.
    pieces: list[tuple[str, list[int]]] = []
    pos = 0
    for m in _SPACED.finditer(base):
        letters = [(c, origin[m.start() + k]) for k, c in enumerate(m.group()) if c not in " .-_*·"]
        joined = "".join(_LEET.get(c, c) for c, _ in letters)
        if watched and any(w in joined for w in watched):
            pieces.append((base[pos:m.start()], origin[pos:m.start()]))
            pieces.append((joined, [o for _, o in letters]))
            pos = m.end()
    pieces.append((base[pos:], origin[pos:]))
    text2 = "".join(p for p, _ in pieces)
    origin2 = [o for _, os in pieces for o in os]

    # Leetspeak inside single tokens: "r@pamycin", "s1rolimus".
    out: list[str] = []
    out_origin: list[int] = []
    pos = 0
    for m in _TOKEN.finditer(text2):
        out.append(text2[pos:m.start()])
        out_origin.extend(origin2[pos:m.start()])
        token = m.group()
        if watched and _LEET_CHARS.search(token) and any(c.isalpha() for c in token):
            folded = "".join(_LEET.get(c, c) for c in token)
            if any(w in folded for w in watched):
                token = folded
        out.append(token)
        out_origin.extend(origin2[m.start():m.end()])
        pos = m.end()
    out.append(text2[pos:])
    out_origin.extend(origin2[pos:])
    return Normalized("".join(out), tuple(out_origin))
