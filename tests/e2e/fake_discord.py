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

from aiohttp import web

from fake_actions import MemberActions
from fake_entities import DISCORD_EPOCH_MS, JSON, MEMBER_PERMS, MOD_PERMS, Channel, Guild, Request, User
from fake_gateway import GatewayMixin, Session, shard_of

UNKNOWN_CHANNEL = {"message": "Unknown Channel", "code": 10003}
UNKNOWN_MESSAGE = {"message": "Unknown Message", "code": 10008}

__all__ = ["FakeDiscord", "Channel", "Guild", "Session", "User", "MOD_PERMS", "MEMBER_PERMS", "shard_of"]


class FakeDiscord(MemberActions, GatewayMixin):
    """Gateway and REST API of two guilds (more with `add_guild`), served on an ephemeral loopback port.

    Guild 1 (`g1`) is also reachable through the flat attributes the first tests used: `guild_id`, `general`, `mods`,
    `forum`, `thread`, `mod_role`, `oncall_role`, `exempt_role`, members `member`, `other_member`, mods `alice` and
    `bob`. Guild 2 (`g2`) has its own channels, forum, thread and roles, mod `carol` and member `dave`, who are not
    members of guild 1. Every channel knows its guild, so events and interactions carry the right guild_id.
    With two shards, guild 1 is on shard 0 and guild 2 on shard 1 (fake_gateway.py has the gateway's rules).
    """

    def __init__(self):
        self._ids = itertools.count(1)
        self._init_gateway()
        self.guild_id = self.snowflake(shard=(0, 2))
        self.app_id = self.snowflake()
        self.bot_user = User(self.snowflake(), "Caveat", bot=True)   # no home guild: a member of every guild
        self.mod_role = self.snowflake()
        self.oncall_role = self.snowflake()
        self.exempt_role = self.snowflake()
        self.general = Channel(self.snowflake(), "general")
        self.mods = Channel(self.snowflake(), "moderators")
        self.forum = Channel(self.snowflake(), "ask-the-community", type=15)
        self.thread = Channel(self.snowflake(), "rapa and surgery", type=11, parent_id=self.forum.id)
        g1 = self.guild_id
        self.member = User(self.snowflake(), "member", roles=[], guild_id=g1)
        self.other_member = User(self.snowflake(), "other", guild_id=g1)
        self.alice = User(self.snowflake(), "alice-mod", roles=[self.mod_role], permissions=MOD_PERMS, guild_id=g1)
        self.bob = User(self.snowflake(), "bob-mod", roles=[self.mod_role], permissions=MOD_PERMS, guild_id=g1)
        self.g1 = Guild(g1, "Health Community", self.general, self.mods, self.forum, self.thread, self.mod_role,
                        self.oncall_role, self.exempt_role, owner=self.alice,
                        users=[self.bot_user, self.member, self.other_member, self.alice, self.bob])
        g2 = self.snowflake(shard=(1, 2))
        g2_forum = Channel(self.snowflake(), "patient-questions", type=15)
        g2_mod_role = self.snowflake()
        # Guild 2's general has the same name as guild 1's on purpose: names are not unique across servers.
        self.carol = User(self.snowflake(), "carol-mod", roles=[g2_mod_role], permissions=MOD_PERMS, guild_id=g2)
        self.dave = User(self.snowflake(), "dave", guild_id=g2)
        self.g2 = Guild(g2, "Rare Disease Circle", Channel(self.snowflake(), "general"),
                        Channel(self.snowflake(), "mod-team"), g2_forum,
                        Channel(self.snowflake(), "dosing and side effects", type=11, parent_id=g2_forum.id),
                        g2_mod_role, self.snowflake(), self.snowflake(), owner=self.carol,
                        users=[self.bot_user, self.carol, self.dave])
        self.guilds: list[Guild] = [self.g1, self.g2]
        self.requests: list[Request] = []
        self.unhandled: list[str] = []
        self.messages: dict[str, dict] = {}
        self._nonces: dict[tuple[str, str], str] = {}   # (channel id, nonce) -> first message id (enforce_nonce)
        self.commands: list[dict] = []
        self._failures: list[tuple[str, re.Pattern, int, float]] = []
        self._interaction_messages: dict[str, dict] = {}
        self._interactions: dict[str, dict] = {}
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- guilds, channels, members -----------------------------------------------------------------
    def guild(self, guild_id: str) -> Guild:
        """The guild with that id (KeyError when unknown)."""
        for g in self.guilds:
            if g.id == str(guild_id):
                return g
        raise KeyError(f"unknown guild {guild_id}")

    def channel(self, channel_id: str) -> Channel:
        """Any channel or thread of any guild by id, forum posts included (KeyError when unknown)."""
        for g in self.guilds:
            for c in g.channels + g.threads:
                if c.id == str(channel_id):
                    return c
        raise KeyError(f"unknown channel {channel_id}")

    def guild_of(self, channel: Channel | str) -> Guild:
        """The guild a channel (or channel id) belongs to."""
        return self.guild((channel if isinstance(channel, Channel) else self.channel(channel)).guild_id)

    def add_member(self, guild: Guild, user: User, *, roles: list[str] | None = None,
                   permissions: int = MEMBER_PERMS) -> User:
        """Make `user` a member of `guild` with those roles and permissions there (before the bot connects, or the
        next GUILD_CREATE lists them; without the members intent Discord sends no GUILD_MEMBER_ADD)."""
        if user.guild_id is None and not user.memberships and user is not self.bot_user:
            user.guild_id, user.roles, user.permissions = guild.id, list(roles or []), permissions
        elif user.guild_id != guild.id:
            user.memberships[guild.id] = (list(roles or []), permissions)
        if user not in guild.users:
            guild.users.append(user)
        return user

    def bot_messages(self, channel: Channel | None = None) -> list[dict]:
        """Messages the bot posted (oldest first) that still exist, in `channel` or everywhere; ephemeral
        interaction responses are not stored."""
        return [m for m in self.messages.values() if m["author"]["id"] == self.bot_user.id
                and (channel is None or m["channel_id"] == channel.id)]

    def snowflake(self, shard: tuple[int, int] | None = None) -> str:
        """A fresh numeric id with a real timestamp part; with `shard=(id, count)`, a guild id Discord routes to
        that shard (the timestamp is moved up to count-1 ms)."""
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        if shard is not None:
            ms += (shard[0] - ms) % shard[1]
        return str((ms << 22) + next(self._ids))

    def add_guild(self, name: str, *, shard: tuple[int, int] | None = None, members: int = 2) -> Guild:
        """A new guild (on that shard when given) with general, moderators, a forum and a thread, the roles of the
        first two, a moderator who owns it and `members` plain members (its `users`: the bot, the mod, members)."""
        gid = self.snowflake(shard=shard)
        forum = Channel(self.snowflake(), "questions", type=15)
        mod_role = self.snowflake()
        mod = User(self.snowflake(), f"mod-of-{gid}", roles=[mod_role], permissions=MOD_PERMS, guild_id=gid)
        people = [User(self.snowflake(), f"member-{i}-of-{gid}", guild_id=gid) for i in range(members)]
        guild = Guild(gid, name, Channel(self.snowflake(), "general"), Channel(self.snowflake(), "moderators"), forum,
                      Channel(self.snowflake(), "a thread", type=11, parent_id=forum.id), mod_role,
                      self.snowflake(), self.snowflake(), owner=mod, users=[self.bot_user, mod, *people])
        self.guilds.append(guild)
        return guild

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
        await self._close_gateway()
        await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        """Value for discord.http.Route.BASE."""
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        """Value for DiscordWebSocket.DEFAULT_GATEWAY."""
        return f"ws://127.0.0.1:{self.port}/gateway"

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
        if status == 404 and payload.get("code") == 0:   # an unknown route, not e.g. Unknown Message
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
        if method == "GET" and path == "/gateway/bot":   # AutoSharded clients without a shard_count ask this
            return 200, {"url": self.gateway_url, "shards": self.recommended_shards,
                         "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0,
                                                 "max_concurrency": 1}}
        if method == "GET" and path == "/oauth2/applications/@me":
            return 200, {"id": self.app_id, "name": "Caveat", "description": "", "icon": None, "bot_public": False,
                         "bot_require_code_grant": False, "owner": self.alice.payload(), "verify_key": "0" * 64,
                         "flags": 0}
        if method == "PUT" and (hit := m(r"/applications/(\d+)/commands", path)):
            self.commands = [dict(c, id=self.snowflake(), application_id=self.app_id, version="1") for c in body]
            return 200, self.commands
        if method == "POST" and (hit := m(r"/channels/(\d+)/messages", path)):
            if not self._known_channel(hit[1]):
                return 404, UNKNOWN_CHANNEL
            return 200, await self._bot_message(hit[1], body)
        if method == "GET" and (hit := m(r"/channels/(\d+)", path)):
            return (200, self.channel(hit[1]).payload()) if self._known_channel(hit[1]) else (404, UNKNOWN_CHANNEL)
        if method == "GET" and (hit := m(r"/channels/(\d+)/messages/(\d+)", path)):
            msg = self.messages.get(hit[2])
            if msg is None or msg["channel_id"] != hit[1]:
                return 404, UNKNOWN_MESSAGE
            return 200, msg
        if method == "GET" and (hit := m(r"/guilds/(\d+)", path)):
            if not any(g.id == hit[1] for g in self.guilds):
                return 404, {"message": "Unknown Guild", "code": 10004}
            return 200, self.guild(hit[1]).rest_payload()
        if method == "GET" and (hit := m(r"/guilds/(\d+)/members/(\d+)", path)):
            guild = next((g for g in self.guilds if g.id == hit[1]), None)
            user = guild and next((u for u in guild.users if u.id == hit[2]), None)
            if user is None:
                return 404, {"message": "Unknown Member", "code": 10007}
            return 200, user.member(guild_id=guild.id)
        if method == "PATCH" and (hit := m(r"/channels/(\d+)/messages/(\d+)", path)):
            msg = self.messages.get(hit[2])
            if msg is None:
                return 404, UNKNOWN_MESSAGE
            msg.update({k: v for k, v in body.items() if k in ("content", "embeds", "components")})
            return 200, msg
        if method == "DELETE" and (hit := m(r"/channels/(\d+)/messages/(\d+)", path)):
            msg = self.messages.get(hit[2])
            if msg is None:
                return 404, UNKNOWN_MESSAGE
            asyncio.get_running_loop().create_task(self.delete_message(msg))  # Discord echoes the delete
            return 204, None
        if method == "POST" and (hit := m(r"/interactions/(\d+)/([^/]+)/callback", path)):
            return 200, self._callback(hit[1], body)
        if method == "POST" and (hit := m(r"/webhooks/(\d+)/([^/]+)", path)):
            return 200, self._ephemeral(body, self._interaction_by_token(hit[2]))
        if method == "PATCH" and (hit := m(r"/webhooks/(\d+)/([^/]+)/messages/@original", path)):
            return 200, self._ephemeral(body, self._interaction_by_token(hit[2]))
        return 404, {"message": "404: Not Found", "code": 0}

    def _known_channel(self, channel_id: str) -> bool:
        return any(c.id == channel_id for g in self.guilds for c in g.channels + g.threads)

    def _interaction_by_token(self, token: str) -> dict | None:
        return next((i for i in self._interactions.values() if i["token"] == token), None)

    async def _bot_message(self, channel_id: str, body: dict) -> dict:
        # Like Discord with enforce_nonce: a second message with the same nonce from the bot returns the first.
        nonce = body.get("nonce") if body.get("enforce_nonce") else None
        if nonce is not None and (first := self._nonces.get((channel_id, str(nonce)))) in self.messages:
            return self.messages[first]
        ref = body.get("message_reference")
        channel = self.channel(channel_id)
        msg = self.message_payload(channel, self.bot_user, body.get("content") or "",
                                   embeds=body.get("embeds") or [], components=body.get("components") or [],
                                   type=19 if ref else 0)
        if ref:
            msg["message_reference"] = dict(ref, channel_id=channel_id, guild_id=channel.guild_id)
        self.messages[msg["id"]] = msg
        if nonce is not None:
            self._nonces[(channel_id, str(nonce))] = msg["id"]
        await self.dispatch("MESSAGE_CREATE", msg)  # like Discord: the bot sees its own message
        return msg

    def _ephemeral(self, body: dict, interaction: dict | None) -> dict:
        data = body or {}
        channel = self.channel(interaction["channel_id"]) if interaction else self.general
        return self.message_payload(channel, self.bot_user, data.get("content") or "",
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
            msg = self._ephemeral(body.get("data"), self._interactions.get(interaction_id))
            out["interaction"]["response_message_id"] = msg["id"]
            out["resource"] = {"type": rtype, "message": msg}
        return out
