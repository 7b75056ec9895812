"""Time helpers shared by the storage modules: all stored times are ISO 8601 UTC text."""
from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def iso(t: datetime | None) -> str:
    """ISO 8601 text in UTC, as stored."""
    return (t or utcnow()).astimezone(timezone.utc).isoformat(timespec="milliseconds")
