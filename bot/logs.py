"""Logging for the `caveat` commands: readable lines, or one JSON object per line (`caveat --log-json ...`).

A JSON line holds `time` (UTC, ISO 8601), `level`, `logger`, `message`, the ids a call passed with
`extra={...}`, and `exc_type`/`exc` for an exception. What keeps post text out of the logs is the rule every
log call in Caveat follows: it logs ids, counts and exception type names, never a post's text or a member's
words. The formatters add one guard of their own: login-link and session tokens that could appear in a logged
URL (aiohttp's access log) are masked.
"""
from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone

# The attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {"message", "asctime"}
_SECRET = re.compile(r"(/login/link/)[^/\s?\"']+|((?:token|caveat_session|caveat_login)=)[^&\s;\"']+")
_MARK = "_caveat_handler"


def redact(text: str) -> str:
    """Mask login-link tokens and token/session values in `text`."""
    return _SECRET.sub(lambda m: (m.group(1) or m.group(2)) + "***", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
            entry["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, ensure_ascii=False, default=repr))


class TextFormatter(logging.Formatter):
    """`LEVEL logger: message`, with the same token masking."""

    def __init__(self):
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup_logging(json: bool = False, verbose: bool = False, *, stream=None, force: bool = False) -> logging.Handler | None:
    """Send log records to stderr (or `stream`) as JSON lines or text; INFO with `verbose`, else WARNING.

    Like `logging.basicConfig`, it leaves logging alone when the root logger already has a handler that it did not
    install (pytest's, an embedding program's) unless `force`; calling it again replaces its own handler."""
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, _MARK, False)]
    if not force and len(ours) != len(root.handlers):
        return None
    for handler in ours:
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    setattr(handler, _MARK, True)
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    return handler
