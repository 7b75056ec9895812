"""Per-community settings (moderators' channel, on-call role, crisis locale, shadow mode, note language,
re-alert delay), stored in the database and set by `/caveat setup` or the dashboard.

Defaults come from policies/community.yaml; every server's overrides are its own.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Protocol

from bot.storage import channel_scope, community_scope
from bot.storage.contract import Audit, SettingsStore
from policies.loader import PolicySet

NOTE_LANGUAGES = ("en",)          # languages the shipped caution notes are written in
DEFAULT_REALERT_MINUTES = 15.0
_SNOWFLAKE = re.compile(r"^\d{1,20}$")


class AuditedSettings(SettingsStore, Audit, Protocol):
    """The store as setting changes need it: each change audited in the same transaction."""


class SettingError(ValueError):
    """A setting value refused, naming the setting and what is allowed."""


@dataclass(frozen=True)
class CommunityConfig:
    """The settings in force for one community."""

    community_id: str
    mod_channel_id: str | None
    oncall_role_id: str | None
    locale: str
    shadow_mode: bool
    note_language: str
    realert_minutes: float

    def to_dict(self) -> dict:
        """Plain values for display and audit."""
        return asdict(self)


def _validate(policy: PolicySet, key: str, value):
    """The stored form of one setting, or SettingError saying what is allowed."""
    if key in ("mod_channel_id", "oncall_role_id"):
        if value in (None, ""):
            return None
        text = str(value).strip().lstrip("<#@&>").rstrip(">")
        if not _SNOWFLAKE.match(text):
            raise SettingError(f"{key} must be a numeric Discord id, got {value!r}")
        return text
    if key == "locale":
        locales = sorted(policy.community.crisis_resources)
        if value not in locales:
            raise SettingError(f"locale must be one of {', '.join(locales)} (crisis resources exist for those), got {value!r}")
        return value
    if key == "shadow_mode":
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("shadow", "true", "on", "1"):
            return True
        if str(value).lower() in ("live", "false", "off", "0"):
            return False
        raise SettingError(f"shadow_mode must be shadow or live, got {value!r}")
    if key == "note_language":
        if value not in NOTE_LANGUAGES:
            raise SettingError(f"note_language must be one of {', '.join(NOTE_LANGUAGES)} (the languages notes exist in),"
                               f" got {value!r}")
        return value
    if key == "realert_minutes":
        try:
            minutes = float(value)
        except (TypeError, ValueError):
            raise SettingError(f"realert_minutes must be a number of minutes (0 turns re-alerts off), got {value!r}") from None
        if not 0 <= minutes <= 24 * 60:
            raise SettingError(f"realert_minutes must be between 0 and 1440, got {minutes:g}")
        return minutes
    raise SettingError(f"unknown setting '{key}' (known: {', '.join(SETTING_KEYS)})")


SETTING_KEYS = ("mod_channel_id", "oncall_role_id", "locale", "shadow_mode", "note_language", "realert_minutes")


async def load_config(store: SettingsStore, policy: PolicySet, community_id: str) -> CommunityConfig:
    """The settings of one community: its stored overrides over the policy's defaults."""
    stored = await store.settings(community_scope(community_id))
    defaults = policy.community
    return CommunityConfig(
        community_id=community_id,
        mod_channel_id=stored.get("mod_channel_id"),
        oncall_role_id=stored.get("oncall_role_id"),
        locale=stored.get("locale") or defaults.default_locale,
        shadow_mode=bool(stored.get("shadow_mode", defaults.shadow_mode)),
        note_language=stored.get("note_language") or NOTE_LANGUAGES[0],
        realert_minutes=float(stored.get("realert_minutes", DEFAULT_REALERT_MINUTES)),
    )


async def update_config(store: AuditedSettings, policy: PolicySet, community_id: str, actor: str,
                        changes: dict) -> CommunityConfig:
    """Validate every change first (nothing is stored if one is wrong), then store them in one transaction."""
    clean = {key: _validate(policy, key, value) for key, value in changes.items()}
    async with store.transaction():
        for key, value in clean.items():
            await store.set_setting(community_scope(community_id), key, value)
        await store.audit(actor, "settings_changed", community=community_id, detail={"changed": clean})
    return await load_config(store, policy, community_id)


async def set_channel_shadow(store: AuditedSettings, community_id: str, channel_id: str, shadow: bool, actor: str) -> None:
    """Shadow or live for one channel (a forum's setting covers its posts; a thread's covers only itself)."""
    async with store.transaction():
        await store.set_setting(channel_scope(community_id, channel_id), "shadow_mode", shadow)
        await store.audit(actor, "mode_set", community=community_id,
                          detail={"channel_id": channel_id, "mode": "shadow" if shadow else "live"})


async def is_shadow(store: SettingsStore, config: CommunityConfig, channel_ids) -> bool:
    """Shadow mode for a post: the nearest channel override (the thread, then its parent channel or forum),
    else the community's setting."""
    for channel_id in channel_ids:
        if not channel_id:
            continue
        value = await store.get_setting(channel_scope(config.community_id, str(channel_id)), "shadow_mode")
        if value is not None:
            return bool(value)
    return config.shadow_mode
