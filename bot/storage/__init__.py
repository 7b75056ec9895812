"""Caveat's storage: one aiosqlite connection, numbered migrations, cases, audit, cooldowns, privacy, outbox."""
from bot.storage.db import default_db_path, open_db
from bot.storage.store import CaseConflict, CaseNotFound, Store, channel_scope, community_scope

__all__ = ["CaseConflict", "CaseNotFound", "Store", "channel_scope", "community_scope", "default_db_path", "open_db"]
