"""Plain data of the fake Discord: ids, permissions, and the channel, user and request records."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

DISCORD_EPOCH_MS = 1420070400000
GUILDS, GUILD_MESSAGES, MESSAGE_CONTENT = 1 << 0, 1 << 9, 1 << 15
MANAGE_MESSAGES = 1 << 13
MEMBER_PERMS = (1 << 10) | (1 << 11) | (1 << 16) | (1 << 31)  # view, send, read history, use app commands
MOD_PERMS = MEMBER_PERMS | MANAGE_MESSAGES
JSON = "application/json"  # exactly this: aiohttp's json_response adds a charset that breaks discord.py's login


def now_iso() -> str:
    """Current time in Discord's timestamp format."""
    return datetime.now(timezone.utc).isoformat()


@dataclass
class Request:
    """One REST call the bot made."""

    method: str
    path: str
    query: dict
    json: object
    headers: dict
    status: int = 200
    response: object = None


@dataclass
class Channel:
    """A guild channel or thread of the fake guild."""

    id: str
    name: str
    type: int = 0
    parent_id: str | None = None

    def payload(self, guild_id: str) -> dict:
        """The channel object as Discord sends it."""
        d = {"id": self.id, "name": self.name, "type": self.type, "position": 0, "permission_overwrites": [],
             "guild_id": guild_id, "nsfw": False, "rate_limit_per_user": 0, "parent_id": self.parent_id}
        if self.type in (11, 12):
            d.update(owner_id="1", message_count=0, member_count=1, thread_metadata={
                "archived": False, "auto_archive_duration": 1440, "archive_timestamp": now_iso(), "locked": False})
        if self.type == 15:
            d.update(available_tags=[], default_reaction_emoji=None, default_sort_order=None, default_forum_layout=0)
        return d


@dataclass
class User:
    """A member (or the bot) of the fake guild."""

    id: str
    name: str
    bot: bool = False
    roles: list[str] = field(default_factory=list)
    permissions: int = MEMBER_PERMS

    def payload(self) -> dict:
        """The user object."""
        return {"id": self.id, "username": self.name, "discriminator": "0", "global_name": self.name,
                "avatar": None, "bot": self.bot}

    def member(self, with_user: bool = True) -> dict:
        """The guild member object."""
        d = {"roles": self.roles, "joined_at": now_iso(), "deaf": False, "mute": False, "flags": 0,
             "nick": None, "avatar": None, "pending": False}
        if with_user:
            d["user"] = self.payload()
        return d


