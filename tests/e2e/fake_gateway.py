"""The fake Discord's gateway: sessions, shards, sequence numbers, RESUME and forced reconnects.

Like Discord: a session is opened by IDENTIFY (optionally with `shard: [id, count]`) and receives the events of the
guilds routed to its shard, `(guild_id >> 22) % count` (an unsharded session is shard 0 of 1: every guild; events
without a guild, such as DMs, go to shard 0). Every session on a shard receives its events, so two processes that
briefly hold the same shard (a rolling restart) both see them. Each event a session is sent is kept in its log with
its sequence number: a RESUME with (session_id, seq) replays what came after seq, then RESUMED. A session closed
with code 1000/1001 is over (no resume, no more events); one dropped otherwise (a killed process, a forced
reconnect) stays resumable and keeps collecting its events, as on Discord.
"""
from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from fake_entities import GUILD_MESSAGES, MESSAGE_CONTENT

HELLO = json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}})
HEARTBEAT_ACK = json.dumps({"op": 11})
CLEAN_CLOSE = (1000, 1001)


def shard_of(guild_id: str | int | None, shard_count: int) -> int:
    """The shard Discord routes a guild's events to (DMs, without a guild, go to shard 0)."""
    return 0 if guild_id is None else (int(guild_id) >> 22) % shard_count


@dataclass
class Session:
    """One gateway session: its shard, intents, token and the log of what it was sent (for RESUME)."""

    id: str
    shard: tuple[int, int] | None
    intents: int
    token: str
    ws: web.WebSocketResponse | None = None
    seq: int = 0
    log: list[tuple[int, str, dict]] = field(default_factory=list)
    over: bool = False                 # closed cleanly: no more events, no RESUME
    replay_overlap: int = 0            # a RESUME also replays this many events the client already had
    resumes: int = 0
    ready: bool = False                # READY and its GUILD_CREATEs were sent
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def routes(self, guild_id: str | None) -> bool:
        """Whether Discord would send this guild's events to this session."""
        return self.shard is None or shard_of(guild_id, self.shard[1]) == self.shard[0]

    @property
    def connected(self) -> bool:
        """A websocket is attached and open."""
        return self.ws is not None and not self.ws.closed


class GatewayMixin:
    """The websocket side of FakeDiscord (mixed in; uses its guilds, bot user and request condition)."""

    def _init_gateway(self) -> None:
        self.sessions: list[Session] = []
        self.intents: int | None = None          # of the latest IDENTIFY
        self.identify_count = 0
        self.recommended_shards = 1              # what GET /gateway/bot answers
        self._session_ids = itertools.count(1)
        self._sockets: set[web.WebSocketResponse] = set()

    # -- what tests use ------------------------------------------------------------------------------
    def live_sessions(self, shard: tuple[int, int] | None = None, *, token: str | None = None) -> list[Session]:
        """Sessions with an open websocket, optionally only those of one shard or one bot token."""
        return [s for s in self.sessions if s.connected and not s.over and (shard is None or s.shard == shard)
                and (token is None or s.token == token)]

    async def wait_for_sessions(self, shards: list[tuple[int, int] | None], *, token: str | None = None,
                                since: int = 0, timeout: float = 15) -> list[Session]:
        """Wait until sessions opened at or after index `since` of `self.sessions` (by that bot token, when given)
        cover these shards, each with its READY and GUILD_CREATEs sent; returns them in the order asked."""
        def found():
            fresh = [s for s in self.sessions[since:] if s.connected and s.ready and token in (None, s.token)]
            picked = [next((s for s in fresh if s.shard == shard), None) for shard in shards]
            return picked if all(picked) else None
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(found), timeout)
            return found()

    async def reconnect(self, session: Session, *, overlap: int = 0) -> None:
        """Ask the client to reconnect (op 7); it RESUMEs, and gets the `overlap` events before its seq again."""
        session.replay_overlap = overlap
        async with session.lock:
            if session.connected:
                await session.ws.send_str(json.dumps({"op": 7, "d": None}))

    async def dispatch(self, event: str, payload: dict) -> None:
        """Send one event to every session whose shard carries its guild, filtered by intents like Discord."""
        guild_id = payload.get("guild_id") or (payload.get("id") if event.startswith("GUILD_") else None)
        for session in [s for s in self.sessions if not s.over and s.routes(guild_id)]:
            async with session.lock:
                await self._emit(session, event, payload)

    # -- the websocket -------------------------------------------------------------------------------
    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        session: Session | None = None
        # Plain TEXT frames: discord.py asked for zlib-stream but only decompresses binary frames.
        await ws.send_str(HELLO)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                if data["op"] == 1:
                    if session is None:
                        await ws.send_str(HEARTBEAT_ACK)
                    else:
                        async with session.lock:
                            await ws.send_str(HEARTBEAT_ACK)
                elif data["op"] == 2:
                    session = await self._identify(ws, data["d"])
                elif data["op"] == 6:
                    session = await self._resume(ws, data["d"])
        finally:
            self._sockets.discard(ws)
            if session is not None and session.ws is ws:
                session.ws = None
                session.over = ws.close_code in CLEAN_CLOSE
            async with self._changed:
                self._changed.notify_all()
        return ws

    async def _identify(self, ws: web.WebSocketResponse, d: dict) -> Session:
        shard = tuple(d["shard"]) if d.get("shard") else None
        self.intents = d["intents"]
        self.identify_count += 1
        session = Session(f"fake-session-{next(self._session_ids)}", shard, d["intents"], d.get("token", ""), ws)
        guilds = [g for g in self.guilds if session.routes(g.id)]
        async with session.lock:
            self.sessions.append(session)
            ready = {"v": 10, "user": self.bot_user.payload(), "guilds": [{"id": g.id, "unavailable": True} for g in guilds],
                     "session_id": session.id, "resume_gateway_url": self.gateway_url,
                     "application": {"id": self.app_id, "flags": 0}, "private_channels": [], "relationships": []}
            if shard:
                ready["shard"] = list(shard)
            await self._emit(session, "READY", ready)
            for guild in guilds:
                await self._emit(session, "GUILD_CREATE", guild.create_payload())
            session.ready = True
        async with self._changed:
            self._changed.notify_all()
        return session

    async def _resume(self, ws: web.WebSocketResponse, d: dict) -> Session | None:
        session = next((s for s in self.sessions if s.id == d.get("session_id")), None)
        if session is None or session.over:
            await ws.send_str(json.dumps({"op": 9, "d": False}))   # INVALID_SESSION, not resumable
            return None
        async with session.lock:
            session.ws, session.resumes = ws, session.resumes + 1
            after = max(0, int(d.get("seq") or 0) - session.replay_overlap)
            for seq, event, payload in session.log:
                if seq > after:
                    await self._send(session, seq, event, payload)
            await self._emit(session, "RESUMED", {})
        async with self._changed:
            self._changed.notify_all()
        return session

    async def _emit(self, session: Session, event: str, payload: dict) -> None:
        """Number, log and (when connected) send one event to a session; the caller holds its lock."""
        if event.startswith("MESSAGE_") and payload.get("guild_id") and not session.intents & GUILD_MESSAGES:
            return
        if event in ("MESSAGE_CREATE", "MESSAGE_UPDATE") and not session.intents & MESSAGE_CONTENT:
            payload = dict(payload, content="", embeds=[], attachments=[], components=[])
        session.seq += 1
        session.log.append((session.seq, event, payload))
        await self._send(session, session.seq, event, payload)

    @staticmethod
    async def _send(session: Session, seq: int, event: str, payload: dict) -> None:
        if not session.connected:
            return   # kept in the log: a RESUME gets it
        try:
            await session.ws.send_str(json.dumps({"op": 0, "t": event, "s": seq, "d": payload}))
        except (ConnectionError, RuntimeError):   # the client went away mid-send; the log keeps it
            session.ws = None

    async def _close_gateway(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
