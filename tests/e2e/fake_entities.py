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
    """A guild channel or thread of one of the fake guilds."""

    id: str
    name: str
    type: int = 0
    parent_id: str | None = None
    guild_id: str | None = None    # set by FakeDiscord for every channel it serves
    owner_id: str | None = None    # threads: who started it

    @property
    def is_thread(self) -> bool:
        """A public (11) or private (12) thread; a forum post is a public thread whose parent is the forum."""
        return self.type in (11, 12)

    def payload(self, guild_id: str | None = None) -> dict:
        """The channel object as Discord sends it."""
        guild_id = guild_id or self.guild_id
        d = {"id": self.id, "name": self.name, "type": self.type, "position": 0, "permission_overwrites": [],
             "guild_id": guild_id, "nsfw": False, "rate_limit_per_user": 0, "parent_id": self.parent_id}
        if self.is_thread:
            d.update(owner_id=self.owner_id or "1", message_count=0, member_count=1, total_message_sent=0, flags=0,
                     applied_tags=[], thread_metadata={
                         "archived": False, "auto_archive_duration": 1440, "archive_timestamp": now_iso(),
                         "locked": False, "create_timestamp": now_iso()})
            del d["permission_overwrites"], d["position"]
        if self.type == 15:
            d.update(available_tags=[], default_reaction_emoji=None, default_sort_order=None, default_forum_layout=0)
        return d


@dataclass
class User:
    """A person (or the bot) in the fake Discord.

    `roles` and `permissions` are the user's in their home guild `guild_id`; a user created without a home guild
    (the bot, an ad-hoc user in a test) counts as a member of every guild with those roles and permissions.
    `memberships` holds the other guilds the user joined (FakeDiscord.add_member): guild id -> (roles, permissions).
    """

    id: str
    name: str
    bot: bool = False
    roles: list[str] = field(default_factory=list)
    permissions: int = MEMBER_PERMS
    guild_id: str | None = None
    memberships: dict[str, tuple[list[str], int]] = field(default_factory=dict)

    def in_guild(self, guild_id: str) -> bool:
        """Whether the user is a member of that guild."""
        return self.guild_id is None or guild_id == self.guild_id or guild_id in self.memberships

    def _in(self, guild_id: str | None) -> tuple[list[str], int]:
        home = guild_id is None or guild_id == self.guild_id
        if home or (self.guild_id is None and guild_id not in self.memberships):
            return self.roles, self.permissions
        if guild_id in self.memberships:
            return self.memberships[guild_id]
        raise ValueError(f"{self.name} ({self.id}) is not a member of guild {guild_id}: Discord would not deliver "
                         f"that; use FakeDiscord.add_member first")

    def roles_in(self, guild_id: str | None = None) -> list[str]:
        """Role ids in that guild (the home guild when None); ValueError when not a member."""
        return self._in(guild_id)[0]

    def permissions_in(self, guild_id: str | None = None) -> int:
        """Permission bits in that guild (the home guild when None); ValueError when not a member."""
        return self._in(guild_id)[1]

    def payload(self) -> dict:
        """The user object."""
        return {"id": self.id, "username": self.name, "discriminator": "0", "global_name": self.name,
                "avatar": None, "bot": self.bot}

    def member(self, with_user: bool = True, guild_id: str | None = None) -> dict:
        """The guild member object in that guild (the home guild when None)."""
        d = {"roles": self.roles_in(guild_id), "joined_at": now_iso(), "deaf": False, "mute": False, "flags": 0,
             "nick": None, "avatar": None, "pending": False}
        if with_user:
            d["user"] = self.payload()
        return d


@dataclass
class Guild:
    """One fake guild: its channels, the forum thread it starts with, its roles and members (the bot included)."""

    id: str
    name: str
    general: Channel
    mods: Channel                  # the moderators' channel
    forum: Channel                 # a forum channel (type 15)
    thread: Channel                # a post in that forum
    mod_role: str
    oncall_role: str
    exempt_role: str
    owner: User
    users: list[User] = field(default_factory=list)       # members listed in GUILD_CREATE
    channels: list[Channel] = field(default_factory=list)  # text and forum channels
    threads: list[Channel] = field(default_factory=list)   # active threads (forum posts included)

    def __post_init__(self):
        for c in (self.general, self.mods, self.forum, self.thread):
            c.guild_id = self.id
        self.channels = self.channels or [self.general, self.mods, self.forum]
        self.threads = self.threads or [self.thread]

    def roles_payload(self) -> list[dict]:
        """@everyone (id = guild id), Mods (Manage Messages), On-call, Clinicians (the exempt role)."""
        return [
            {"id": self.id, "name": "@everyone", "permissions": str(MEMBER_PERMS), "position": 0, "color": 0},
            {"id": self.mod_role, "name": "Mods", "permissions": str(MOD_PERMS), "position": 1, "color": 0},
            {"id": self.oncall_role, "name": "On-call", "permissions": "0", "position": 2, "color": 0},
            {"id": self.exempt_role, "name": "Clinicians", "permissions": "0", "position": 3, "color": 0}]

    def create_payload(self) -> dict:
        """The GUILD_CREATE event of this guild."""
        return {
            "id": self.id, "name": self.name, "icon": None, "owner_id": self.owner.id,
            "roles": self.roles_payload(), "emojis": [], "stickers": [], "features": [], "unavailable": False,
            "large": False, "members": [u.member(guild_id=self.id) for u in self.users],
            "member_count": len(self.users),
            "channels": [c.payload(self.id) for c in self.channels],
            "threads": [t.payload(self.id) for t in self.threads], "voice_states": [], "presences": [],
            "stage_instances": [], "guild_scheduled_events": [], "preferred_locale": "en-US",
            "verification_level": 0, "explicit_content_filter": 0, "default_message_notifications": 0,
            "mfa_level": 0, "premium_tier": 0, "system_channel_flags": 0, "nsfw_level": 0, "afk_timeout": 300,
            "joined_at": now_iso()}

    def rest_payload(self) -> dict:
        """The guild object GET /guilds/{id} returns."""
        d = self.create_payload()
        for key in ("members", "channels", "threads", "voice_states", "presences", "stage_instances",
                    "guild_scheduled_events", "joined_at", "large", "member_count"):
            d.pop(key)
        return d
