"""Reading JSON lines of posts ({"text": ..., ...}) with errors that name the file and line."""
from __future__ import annotations

import json
from typing import Iterable, Iterator


def read_text_rows(lines: Iterable[str], source: str) -> Iterator[tuple[int, dict]]:
    """Yield (line number, row) for each non-blank line; ValueError 'source:line: what is wrong' otherwise."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}:{n}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise ValueError(f"{source}:{n}: each line needs a string 'text' field")
        yield n, row
