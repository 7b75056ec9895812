"""Typed keys for the services kept on the aiohttp application."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from bot.storage.contract import Storage

STORE: web.AppKey[Storage] = web.AppKey("store")
PIPELINE: web.AppKey[Any] = web.AppKey("pipeline")
AUTH: web.AppKey[Any] = web.AppKey("auth")
POLICY_DIR: web.AppKey[str] = web.AppKey("policy_dir", str)
#: Publishes a saved threshold change to every process on the database (absent in tests that build a bare app).
POLICY_SYNC: web.AppKey[Any] = web.AppKey("policy_sync")
SESSION: web.RequestKey[Any] = web.RequestKey("session")
