"""A small fake Discord (gateway websocket + REST) on 127.0.0.1 for driving the unmodified discord.py client.

It keeps a log of every REST request the bot makes (method, path, JSON body, headers) so tests assert on what
the bot SENT. Facts it relies on are in /work/shared/notes/discord-loopback.md.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from aiohttp import WSMsgType, web

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


class FakeDiscord:
    """Gateway and REST API of one guild, served on an ephemeral loopback port."""

    def __init__(self):
        self._ids = itertools.count(1)
        self.guild_id = self.snowflake()
        self.app_id = self.snowflake()
        self.bot_user = User(self.snowflake(), "Caveat", bot=True)
        self.mod_role = self.snowflake()
        self.oncall_role = self.snowflake()
        self.exempt_role = self.snowflake()
        self.general = Channel(self.snowflake(), "general")
        self.mods = Channel(self.snowflake(), "moderators")
        self.forum = Channel(self.snowflake(), "ask-the-community", type=15)
        self.thread = Channel(self.snowflake(), "rapa and surgery", type=11, parent_id=self.forum.id)
        self.member = User(self.snowflake(), "member", roles=[])
        self.other_member = User(self.snowflake(), "other")
        self.alice = User(self.snowflake(), "alice-mod", roles=[self.mod_role], permissions=MOD_PERMS)
        self.bob = User(self.snowflake(), "bob-mod", roles=[self.mod_role], permissions=MOD_PERMS)
        self.requests: list[Request] = []
        self.unhandled: list[str] = []
        self.messages: dict[str, dict] = {}
        self.commands: list[dict] = []
        self.intents: int | None = None
        self.identify_count = 0
        self._failures: list[tuple[str, re.Pattern, int, float]] = []
        self._interaction_messages: dict[str, dict] = {}
        self._changed = asyncio.Condition()
        self._ws: web.WebSocketResponse | None = None
        self._seq = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    def snowflake(self) -> str:
        """A fresh numeric id with a real timestamp part."""
        return str(((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) + next(self._ids))

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Serve on 127.0.0.1 on a free port."""
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop serving."""
        if self._ws is not None:
            await self._ws.close()
        await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        """Value for discord.http.Route.BASE."""
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        """Value for DiscordWebSocket.DEFAULT_GATEWAY."""
        return f"ws://127.0.0.1:{self.port}/gateway"

    # -- gateway -------------------------------------------------------------------------------
    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._ws = ws
        # Plain TEXT frames: discord.py asked for zlib-stream but only decompresses binary frames.
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if data["op"] == 1:
                await ws.send_str(json.dumps({"op": 11}))
            elif data["op"] == 2:
                self.intents = data["d"]["intents"]
                self.identify_count += 1
                await self._send_ready()
        return ws

    async def dispatch(self, event: str, payload: dict) -> None:
        """Send one gateway event to the connected bot, filtered by its intents like Discord does."""
        if event.startswith("MESSAGE_") and payload.get("guild_id") and not (self.intents or 0) & GUILD_MESSAGES:
            return
        if event in ("MESSAGE_CREATE", "MESSAGE_UPDATE") and not (self.intents or 0) & MESSAGE_CONTENT:
            payload = dict(payload, content="", embeds=[], attachments=[], components=[])
        self._seq += 1
        await self._ws.send_str(json.dumps({"op": 0, "t": event, "s": self._seq, "d": payload}))

    async def _send_ready(self) -> None:
        self._seq = 0
        await self.dispatch("READY", {
            "v": 10, "user": self.bot_user.payload(), "guilds": [{"id": self.guild_id, "unavailable": True}],
            "session_id": "fake-session", "resume_gateway_url": self.gateway_url,
            "application": {"id": self.app_id, "flags": 0}, "private_channels": [], "relationships": []})
        users = [self.bot_user, self.member, self.other_member, self.alice, self.bob]
        roles = [
            {"id": self.guild_id, "name": "@everyone", "permissions": str(MEMBER_PERMS), "position": 0, "color": 0},
            {"id": self.mod_role, "name": "Mods", "permissions": str(MOD_PERMS), "position": 1, "color": 0},
            {"id": self.oncall_role, "name": "On-call", "permissions": "0", "position": 2, "color": 0},
            {"id": self.exempt_role, "name": "Clinicians", "permissions": "0", "position": 3, "color": 0}]
        await self.dispatch("GUILD_CREATE", {
            "id": self.guild_id, "name": "Health Community", "icon": None, "owner_id": self.alice.id,
            "roles": roles, "emojis": [], "stickers": [], "features": [], "unavailable": False, "large": False,
            "members": [u.member() for u in users], "member_count": len(users),
            "channels": [c.payload(self.guild_id) for c in (self.general, self.mods, self.forum)],
            "threads": [self.thread.payload(self.guild_id)], "voice_states": [], "presences": [],
            "stage_instances": [], "guild_scheduled_events": [], "preferred_locale": "en-US",
            "verification_level": 0, "explicit_content_filter": 0, "default_message_notifications": 0,
            "mfa_level": 0, "premium_tier": 0, "system_channel_flags": 0, "nsfw_level": 0, "afk_timeout": 300,
            "joined_at": now_iso()})

    # -- members' actions --------------------------------------------------------------------------
    def message_payload(self, channel: Channel, author: User, content: str, **extra) -> dict:
        """A message object in `channel` by `author`."""
        d = {"id": self.snowflake(), "channel_id": channel.id, "guild_id": self.guild_id, "author": author.payload(),
             "member": author.member(with_user=False), "content": content, "timestamp": now_iso(),
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

    async def edit_message(self, message: dict, content: str) -> dict:
        """A member edits a message (MESSAGE_UPDATE with the full message)."""
        message = dict(message, content=content, edited_timestamp=now_iso())
        self.messages[message["id"]] = message
        await self.dispatch("MESSAGE_UPDATE", message)
        return message

    async def delete_message(self, message: dict) -> None:
        """A member deletes a message (MESSAGE_DELETE)."""
        self.messages.pop(message["id"], None)
        await self.dispatch("MESSAGE_DELETE", {"id": message["id"], "channel_id": message["channel_id"],
                                               "guild_id": self.guild_id})

    def _interaction(self, itype: int, data: dict, user: User, channel: Channel, message: dict | None) -> dict:
        iid = self.snowflake()
        payload = {
            "id": iid, "application_id": self.app_id, "type": itype, "token": f"token-{iid}", "version": 1,
            "data": data, "guild_id": self.guild_id, "channel_id": channel.id, "channel": channel.payload(self.guild_id),
            "member": dict(user.member(), permissions=str(user.permissions)), "app_permissions": str(MOD_PERMS),
            "locale": "en-US", "guild_locale": "en-US", "entitlements": [], "attachment_size_limit": 8 * 1024 * 1024,
            "authorizing_integration_owners": {"0": self.guild_id}, "context": 0}
        if message is not None:
            payload["message"] = message
            self._interaction_messages[iid] = message
        return payload

    async def run_slash_command(self, command: str, options: dict | None = None, *, user: User,
                                channel: Channel | None = None) -> dict:
        """A user runs e.g. `caveat test` or `caveat policy reload`; returns the interaction payload."""
        names = command.split()
        opts = [{"name": k, "type": {str: 3, int: 4, bool: 5}[type(v)], "value": v} for k, v in (options or {}).items()]
        for depth, name in enumerate(reversed(names[1:])):
            opts = [{"name": name, "type": 1 if depth == 0 else 2, "options": opts}]
        root = next((c for c in self.commands if c["name"] == names[0]), {"id": self.snowflake()})
        data = {"id": root["id"], "name": names[0], "type": 1, "options": opts}
        payload = self._interaction(2, data, user, channel or self.general, None)
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
        return next(c for c in (self.general, self.mods, self.forum, self.thread) if c.id == channel_id)

    # -- REST ----------------------------------------------------------------------------------
    def fail_next(self, method: str, path: str, status: int, retry_after: float = 0.01) -> None:
        """Make the next matching request fail with `status` (429 carries retry_after and a Via header)."""
        self._failures.append((method, re.compile(path), status, retry_after))

    async def wait_for_request(self, method: str, path: str, *, since: int = 0, timeout: float = 5) -> Request:
        """The first request at or after index `since` matching method and path regex; waits for it."""
        pattern = re.compile(path)

        def find():
            return next((r for r in self.requests[since:] if r.method == method and pattern.search(r.path)), None)
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(find), timeout)
            return find()

    def find(self, method: str, path: str, *, since: int = 0) -> list[Request]:
        """Requests so far matching method and path regex."""
        pattern = re.compile(path)
        return [r for r in self.requests[since:] if r.method == method and pattern.search(r.path)]

    def mark(self) -> int:
        """Index to pass as `since` to look only at requests made from now on."""
        return len(self.requests)

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        body = None
        if request.content_type == "multipart/form-data":
            form = await request.post()
            body = json.loads(form["payload_json"]) if "payload_json" in form else None
        elif request.can_read_body:
            body = await request.json()
        record = Request(request.method, path, dict(request.query), body, dict(request.headers))
        for failure in self._failures:
            method, pattern, status, retry_after = failure
            if method == request.method and pattern.search(path):
                self._failures.remove(failure)
                record.status = status
                await self._log(record)
                headers = {"Via": "1.1 google"} if status == 429 else {}
                return self._json({"message": "fake failure", "code": 0, "retry_after": retry_after, "global": False},
                                  status, headers)
        try:
            status, payload = await self._route(request.method, path, body, request.query)
        except Exception as exc:  # a handler bug must not look like a 5xx (discord.py would retry and sleep)
            status, payload = 400, {"message": f"fake handler error: {exc!r}", "code": 50035}
        record.status, record.response = status, payload
        await self._log(record)
        if status == 404:
            self.unhandled.append(f"{request.method} {path}")
        if status == 204:
            return web.Response(status=204)
        return self._json(payload, status)

    async def _log(self, record: Request) -> None:
        async with self._changed:
            self.requests.append(record)
            self._changed.notify_all()

    @staticmethod
    def _json(payload, status: int = 200, headers: dict | None = None) -> web.Response:
        return web.Response(status=status, body=json.dumps(payload).encode(), content_type=JSON, headers=headers)

    async def _route(self, method: str, path: str, body, query):
        m = re.fullmatch
        if method == "GET" and path == "/users/@me":
            return 200, self.bot_user.payload()
        if method == "GET" and path == "/oauth2/applications/@me":
            return 200, {"id": self.app_id, "name": "Caveat", "description": "", "icon": None, "bot_public": False,
                         "bot_require_code_grant": False, "owner": self.alice.payload(), "verify_key": "0" * 64,
                         "flags": 0}
        if method == "PUT" and (hit := m(r"/applications/(\d+)/commands", path)):
            self.commands = [dict(c, id=self.snowflake(), application_id=self.app_id, version="1") for c in body]
            return 200, self.commands
        if method == "POST" and (hit := m(r"/channels/(\d+)/messages", path)):
            return 200, await self._bot_message(hit[1], body)
        if method == "PATCH" and (hit := m(r"/channels/(\d+)/messages/(\d+)", path)):
            msg = self.messages.get(hit[2])
            if msg is None:
                return 404, {"message": "Unknown Message", "code": 10008}
            msg.update({k: v for k, v in body.items() if k in ("content", "embeds", "components")})
            return 200, msg
        if method == "DELETE" and (hit := m(r"/channels/(\d+)/messages/(\d+)", path)):
            msg = self.messages.get(hit[2])
            if msg is None:
                return 404, {"message": "Unknown Message", "code": 10008}
            asyncio.get_running_loop().create_task(self.delete_message(msg))  # Discord echoes the delete
            return 204, None
        if method == "POST" and (hit := m(r"/interactions/(\d+)/([^/]+)/callback", path)):
            return 200, self._callback(hit[1], body)
        if method == "POST" and (hit := m(r"/webhooks/(\d+)/([^/]+)", path)):
            return 200, self._ephemeral(body)
        if method == "PATCH" and (hit := m(r"/webhooks/(\d+)/([^/]+)/messages/@original", path)):
            return 200, self._ephemeral(body)
        return 404, {"message": "404: Not Found", "code": 0}

    async def _bot_message(self, channel_id: str, body: dict) -> dict:
        ref = body.get("message_reference")
        msg = self.message_payload(self._channel(channel_id), self.bot_user, body.get("content") or "",
                                   embeds=body.get("embeds") or [], components=body.get("components") or [],
                                   type=19 if ref else 0)
        if ref:
            msg["message_reference"] = dict(ref, channel_id=channel_id, guild_id=self.guild_id)
        self.messages[msg["id"]] = msg
        await self.dispatch("MESSAGE_CREATE", msg)  # like Discord: the bot sees its own message
        return msg

    def _ephemeral(self, body: dict) -> dict:
        data = body or {}
        return self.message_payload(self.general, self.bot_user, data.get("content") or "",
                                    embeds=data.get("embeds") or [], components=data.get("components") or [], flags=64)

    def _callback(self, interaction_id: str, body: dict) -> dict:
        rtype = body["type"]
        out = {"interaction": {"id": interaction_id, "type": 2}}
        if rtype == 7 and interaction_id in self._interaction_messages:
            # UPDATE_MESSAGE edits the message the component was on, as Discord does.
            msg = self._interaction_messages[interaction_id]
            data = body.get("data") or {}
            msg.update({k: v for k, v in data.items() if k in ("content", "embeds", "components")})
            out["resource"] = {"type": rtype, "message": msg}
        elif rtype in (4, 7):
            msg = self._ephemeral(body.get("data"))
            out["interaction"]["response_message_id"] = msg["id"]
            out["resource"] = {"type": rtype, "message": msg}
        return out
