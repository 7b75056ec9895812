"""Reading JSON lines of posts ({"text": ..., ...}) with errors that name the file and line.

Bytes are decoded here, not by `open()`, so a file that is not UTF-8 is reported as 'file:line: not UTF-8'
instead of a traceback; lines are split at '\\n' only (a JSON string may hold U+2028 and other characters
that `str.splitlines` would split at). Lone surrogates, which a JSON escape like "\\ud800" can put in a
string and which nothing downstream can encode, become U+FFFD in a row's string fields.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from classifiers.normalize import clean_text


def decode_utf8(data: bytes, source: str) -> str:
    """`data` as text (a leading byte-order mark dropped); ValueError 'source:line: not UTF-8 ...' otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ValueError(f"{source}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x} at byte {column} of the line);"
                         " save the file as UTF-8") from None
    return text[1:] if text.startswith("\ufeff") else text


def read_lines(data: bytes, source: str) -> list[str]:
    """The lines of a UTF-8 file's bytes (split at '\\n' only), for `read_text_rows`."""
    return decode_utf8(data, source).split("\n")


def read_text_file(path: str | Path | None, source: str | None = None, stream: BinaryIO | None = None
                   ) -> Iterator[tuple[int, dict]]:
    """`read_text_rows` over a file (or a binary stream such as stdin's buffer), decoded as UTF-8 here."""
    if stream is not None:
        data = stream.read()
    elif path is not None:
        data = Path(path).read_bytes()
    else:
        raise ValueError("read_text_file needs a path or a stream")
    return read_text_rows(read_lines(data, source or str(path)), source or str(path))


def clean_row(row: dict) -> dict:
    """A row with its keys and string fields passed through `clean_text` (nested values are left as they are:
    no reader uses them)."""
    return {clean_text(k): clean_text(v) if isinstance(v, str) else v for k, v in row.items()}


def read_text_rows(lines: Iterable[str], source: str) -> Iterator[tuple[int, dict]]:
    """Yield (line number, row) for each non-blank line; ValueError 'source:line: what is wrong' otherwise."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}:{n}: not valid JSON ({exc.msg})") from None
        except ValueError as exc:  # e.g. an integer too long to convert
            raise ValueError(f"{source}:{n}: not valid JSON ({exc})") from None
        except RecursionError:
            raise ValueError(f"{source}:{n}: not valid JSON (nested too deeply)") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise ValueError(f"{source}:{n}: each line needs a string 'text' field")
        yield n, clean_row(row)


def row_id(row: dict, source: str, n: int) -> str | int | None:
    """The row's optional 'id': a non-empty string or an integer; ValueError 'source:line: ...' otherwise."""
    value = row.get("id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise ValueError(f"{source}:{n}: 'id' must be a non-empty string or an integer, not {json_kind(value)}")
    return value


def json_kind(value) -> str:
    """A JSON value's type in words, for error messages (never the value itself: it may be member text)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "an empty string" if not value else "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__

