"""What members and moderators do in the fake Discord: post (forum posts too), edit, delete, run commands, click,
choose, submit. Each event carries the guild of its channel and the actor's member object in that guild."""
from __future__ import annotations

from fake_entities import MOD_PERMS, Channel, User, now_iso


class RoleOption:
    """A role given as a slash-command option: `RoleOption(guild.oncall_role)`."""

    def __init__(self, role_id: str):
        self.id = role_id


class MemberActions:
    """Gateway events a person's actions produce; mixed into FakeDiscord."""

    # -- members' actions --------------------------------------------------------------------------
    def message_payload(self, channel: Channel, author: User, content: str, **extra) -> dict:
        """A message object in `channel` by `author`, with the guild of the channel and the author's member object
        there (ValueError when the author is not a member of that guild)."""
        guild_id = channel.guild_id or self.guild_id
        d = {"id": self.snowflake(), "channel_id": channel.id, "guild_id": guild_id, "author": author.payload(),
             "member": author.member(with_user=False, guild_id=guild_id), "content": content, "timestamp": now_iso(),
             "edited_timestamp": None, "tts": False, "mention_everyone": False, "mentions": [], "mention_roles": [],
             "attachments": [], "embeds": [], "pinned": False, "type": 0, "flags": 0, "components": []}
        d.update(extra)
        return d

    async def send_message(self, content: str, *, author: User | None = None, channel: Channel | None = None,
                           message_id: str | None = None, **extra) -> dict:
        """A member posts a message (MESSAGE_CREATE); returns the message payload."""
        msg = self.message_payload(channel or self.general, author or self.member, content, **extra)
        if message_id:
            msg["id"] = message_id
        self.messages[msg["id"]] = msg
        await self.dispatch("MESSAGE_CREATE", msg)
        return msg

    async def create_forum_post(self, title: str, content: str, *, author: User | None = None,
                                forum: Channel | None = None, thread_id: str | None = None, **extra) -> dict:
        """A member opens a post in a forum, as Discord does it: THREAD_CREATE of a new public thread (type 11,
        parent = the forum, name = title, owner = author, newly_created) then MESSAGE_CREATE of the starter message,
        whose id is the thread id and whose channel is the thread. Returns the message payload; the thread is
        `self.channel(msg["channel_id"])` and joins its guild's `threads` (so a later GUILD_CREATE lists it)."""
        forum, author = forum or self.forum, author or self.member
        if forum.type != 15:
            raise ValueError(f"{forum.name} is not a forum channel (type 15)")
        guild = self.guild_of(forum)
        if not author.in_guild(guild.id):
            raise ValueError(f"{author.name} is not a member of guild {guild.id}")
        thread = Channel(thread_id or self.snowflake(), title, type=11, parent_id=forum.id, guild_id=guild.id,
                         owner_id=author.id)
        guild.threads.append(thread)
        await self.dispatch("THREAD_CREATE", dict(thread.payload(), newly_created=True))
        msg = self.message_payload(thread, author, content, **extra)
        msg["id"] = thread.id
        msg["position"] = 0
        self.messages[msg["id"]] = msg
        await self.dispatch("MESSAGE_CREATE", msg)
        return msg

    async def edit_message(self, message: dict, content: str) -> dict:
        """A member edits a message (MESSAGE_UPDATE with the full message)."""
        message = dict(message, content=content, edited_timestamp=now_iso())
        self.messages[message["id"]] = message
        await self.dispatch("MESSAGE_UPDATE", message)
        return message

    async def delete_message(self, message: dict) -> None:
        """A member deletes a message (MESSAGE_DELETE)."""
        self.messages.pop(message["id"], None)
        guild_id = message.get("guild_id") or self.guild_of(message["channel_id"]).id
        await self.dispatch("MESSAGE_DELETE", {"id": message["id"], "channel_id": message["channel_id"],
                                               "guild_id": guild_id})

    def _interaction(self, itype: int, data: dict, user: User, channel: Channel, message: dict | None) -> dict:
        """An interaction in `channel`'s guild: the member object and `permissions` are the user's IN that guild."""
        iid = self.snowflake()
        guild_id = channel.guild_id or self.guild_id
        payload = {
            "id": iid, "application_id": self.app_id, "type": itype, "token": f"token-{iid}", "version": 1,
            "data": data, "guild_id": guild_id, "channel_id": channel.id, "channel": channel.payload(guild_id),
            "member": dict(user.member(guild_id=guild_id), permissions=str(user.permissions_in(guild_id))),
            "app_permissions": str(MOD_PERMS), "locale": "en-US", "guild_locale": "en-US", "entitlements": [],
            "attachment_size_limit": 8 * 1024 * 1024, "authorizing_integration_owners": {"0": guild_id}, "context": 0}
        if message is not None:
            payload["message"] = message
            self._interaction_messages[iid] = message
        self._interactions[iid] = payload
        return payload

    async def run_slash_command(self, command: str, options: dict | None = None, *, user: User,
                                channel: Channel | None = None) -> dict:
        """A user runs e.g. `caveat test` or `caveat policy reload`; returns the interaction payload."""
        names = command.split()
        channel = channel or self.general
        guild = self.guild_of(channel)
        resolved: dict = {}
        opts = []
        for k, v in (options or {}).items():
            if isinstance(v, Channel):   # a channel option: Discord sends its id and the channel under `resolved`
                resolved.setdefault("channels", {})[v.id] = dict(v.payload(), permissions=str(MOD_PERMS))
                opts.append({"name": k, "type": 7, "value": v.id})
            elif isinstance(v, RoleOption):
                role = next(r for r in guild.roles_payload() if r["id"] == v.id)
                resolved.setdefault("roles", {})[v.id] = dict(role, hoist=False, managed=False, mentionable=True)
                opts.append({"name": k, "type": 8, "value": v.id})
            else:
                opts.append({"name": k, "type": {str: 3, int: 4, bool: 5, float: 10}[type(v)], "value": v})
        for depth, name in enumerate(reversed(names[1:])):
            opts = [{"name": name, "type": 1 if depth == 0 else 2, "options": opts}]
        root = next((c for c in self.commands if c["name"] == names[0]), {"id": self.snowflake()})
        data = {"id": root["id"], "name": names[0], "type": 1, "options": opts}
        if resolved:
            data["resolved"] = resolved
        payload = self._interaction(2, data, user, channel, None)
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def click_button(self, message: dict, custom_id: str, *, user: User) -> dict:
        """A user clicks a button on a message the bot posted."""
        data = {"custom_id": custom_id, "component_type": 2}
        payload = self._interaction(3, data, user, self._channel(message["channel_id"]), message)
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def choose(self, message: dict, custom_id: str, values: list[str], *, user: User) -> dict:
        """A user picks from a select menu on a message the bot sent."""
        data = {"custom_id": custom_id, "component_type": 3, "values": values}
        payload = self._interaction(3, data, user, self._channel(message["channel_id"]), message)
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def submit_modal(self, modal: dict, values: dict[str, str], *, user: User, channel: Channel) -> dict:
        """A user submits a modal the bot opened (the modal dict from the callback body)."""
        rows = [{"type": 1, "components": [{"type": 4, "custom_id": k, "value": v}]} for k, v in values.items()]
        payload = self._interaction(5, {"custom_id": modal["custom_id"], "components": rows}, user, channel, None)
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    def _channel(self, channel_id: str) -> Channel:
        return self.channel(channel_id)

