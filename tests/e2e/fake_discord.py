"""A small fake Discord (gateway websocket + REST) on 127.0.0.1 for driving the unmodified discord.py client.

It keeps a log of every REST request the bot makes (method, path, JSON body, headers) so tests assert on what
the bot SENT. Facts it relies on are in ../shared/notes/discord-loopback.md.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import re
import time

from aiohttp import WSMsgType, web

from fake_actions import MemberActions
from fake_entities import (DISCORD_EPOCH_MS, GUILD_MESSAGES, JSON, MEMBER_PERMS, MESSAGE_CONTENT, MOD_PERMS, Channel,
                           Request, User, now_iso)

__all__ = ["FakeDiscord", "Channel", "User", "MOD_PERMS", "MEMBER_PERMS"]


class FakeDiscord(MemberActions):
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
