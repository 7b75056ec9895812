"""Caveat's storage: one aiosqlite connection, numbered migrations, cases, audit, cooldowns, privacy."""
from bot.storage.db import default_db_path, open_db
from bot.storage.store import CaseConflict, CaseNotFound, Store

__all__ = ["CaseConflict", "CaseNotFound", "Store", "default_db_path", "open_db"]
