"""One policy in force for every process on one database: publish it there, and follow what others publish.

A process that changes the policy (`/caveat policy reload`, a threshold saved on the dashboard, `caveat policy
publish`, or the first process ever to start on a database) publishes its files to storage. Every process
follows the newest publication: on PostgreSQL it is notified at once (LISTEN/NOTIFY), on SQLite it polls every
`poll_seconds`. Following means loading the published files (written to a private folder of this process) and
checking that they hash to the published version, so every decision of every process carries the same
`policy_version`. A publication that does not load here is refused loudly and the current policy stays.

A process that starts with different files on disk than the active policy follows the database, and says so:
the database is the truth once several processes share it (a restarted shard must not undo a threshold a
moderator saved). `caveat policy publish` puts the files on disk in force.
"""
from __future__ import annotations

import asyncio
import logging
import re
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from bot.storage.contract import Policies
from policies.loader import PolicyError, PolicyIssue, PolicySet, load_policy

log = logging.getLogger("caveat.policy")

#: What `load_policy` names a version: "pol-" and 12 hex digits of the files' hash.
VERSION = re.compile(r"pol-[0-9a-f]{6,64}")


def policy_files(policy: PolicySet) -> dict[str, str]:
    """The files that make up a loaded policy (the ones its version hashes), as text."""
    root = Path(policy.directory)
    return {rel: (root / rel).read_text(encoding="utf-8") for rel in policy.files}


class PolicySync:
    """Publishes this process's policy changes and follows everyone else's."""

    def __init__(self, store: Policies, current: Callable[[], PolicySet], apply: Callable[[PolicySet], None], *,
                 poll_seconds: float = 2.0, fallback_poll_seconds: float = 60.0):
        self.store, self.current, self.apply = store, current, apply
        self.poll_seconds, self.fallback_poll_seconds = poll_seconds, fallback_poll_seconds
        self._folder = Path(tempfile.mkdtemp(prefix="caveat-policy-"))
        self._changed = asyncio.Event()
        self._stop_listening: Callable[[], Awaitable[None]] | None = None
        self._seen: int | None = None
        self._lock = asyncio.Lock()  # one check or publish at a time: an older publication never lands over a newer

    async def start(self, *, actor: str = "startup") -> str:
        """At process start: publish our policy if none is active yet, else follow the active one.

        Returns a one-line account of what happened (for the console and the log)."""
        active = await self.store.active_policy()
        mine = self.current()
        if active is None:
            await self.publish(mine, actor=actor)
            return f"policy {mine.version} published (the first on this database)"
        if active["version"] == mine.version:
            self._seen = active["id"]
            return f"policy {mine.version} (in force on this database)"
        await self.check()
        now = self.current()
        if now.version == active["version"]:
            return (f"policy {now.version} is in force on this database (published by {active['actor']});"
                    f" the files in {mine.directory} are {mine.version}: `caveat policy publish` puts them in force")
        return f"policy {mine.version}: the active policy {active['version']} could not be loaded here (see the log)"

    async def publish(self, policy: PolicySet, *, actor: str) -> None:
        """Put `policy` in force for every process (this one included)."""
        files = await asyncio.to_thread(policy_files, policy)
        async with self._lock:
            self._seen = await self.store.publish_policy(policy.version, files, actor=actor)
        log.info("policy %s published by %s", policy.version, actor)

    async def check(self) -> bool:
        """Follow the active policy if it is not ours; True when the policy in force here changed.

        A publication that cannot load here (invalid files, a malformed version) is refused once and remembered;
        a failure to read it (the database hiccuped) is retried at the next check."""
        async with self._lock:
            active = await self.store.active_policy()
            if active is None or active["id"] == self._seen:
                return False
            if active["version"] == self.current().version:
                self._seen = active["id"]
                return False
            files = await self.store.policy_files(active["version"])
            try:
                policy = await asyncio.to_thread(self._materialize, active["version"], files or {})
            except PolicyError as exc:
                self._seen = active["id"]
                log.error("policy %s published by %s does not load here (%d problems); keeping %s",
                          active["version"][:40], active["actor"], len(exc.issues), self.current().version)
                return False
            old = self.current().version
            self.apply(policy)
            self._seen = active["id"]
        log.info("policy %s -> %s (published by %s)", old, policy.version, active["actor"])
        return True

    def _materialize(self, version: str, files: dict[str, str]) -> PolicySet:
        if not VERSION.fullmatch(version):  # it names a folder: never a path from the database
            raise PolicyError([PolicyIssue("policy", 0, "published version is not a policy version (pol-<hex>)")])
        folder = self._folder / version
        if folder.exists():
            shutil.rmtree(folder)
        for rel, text in files.items():
            path = (folder / rel).resolve()
            if folder.resolve() not in path.parents:
                raise PolicyError([PolicyIssue(rel, 0, "published file name leaves the policy folder")])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        policy = load_policy(folder)
        if policy.version != version:
            raise PolicyError([PolicyIssue("policy", 0, f"published files hash to {policy.version}, not {version}")])
        for other in self._folder.iterdir():  # keep only the one in force
            if other != folder:
                shutil.rmtree(other, ignore_errors=True)
        return policy

    async def run(self) -> None:
        """Follow publications until cancelled: notified (PostgreSQL) or polling (SQLite)."""
        try:
            self._stop_listening = await self.store.listen_policy(self._changed.set)
        except Exception as exc:
            log.warning("cannot listen for policy changes (%s); polling every %gs", type(exc).__name__,
                        self.poll_seconds)
        wait = self.fallback_poll_seconds if self._stop_listening else self.poll_seconds
        self._changed.set()  # check once now: a publication may have come before the listener
        try:
            while True:
                try:
                    await asyncio.wait_for(self._changed.wait(), wait)
                except asyncio.TimeoutError:
                    pass
                self._changed.clear()
                if self._stop_listening is not None and not getattr(self._stop_listening, "alive", lambda: True)():
                    await self._listen_again()
                try:
                    await self.check()
                except Exception as exc:  # a database hiccup: try again at the next tick
                    log.warning("policy check failed: %s", type(exc).__name__)
        finally:
            await self.close()

    async def _listen_again(self) -> None:
        """The notification connection was lost (PostgreSQL restarted): open a new one, or poll until it works."""
        try:
            self._stop_listening = await self.store.listen_policy(self._changed.set)
            log.info("listening for policy changes again")
        except Exception as exc:
            log.warning("cannot listen for policy changes yet (%s); checking every %gs", type(exc).__name__,
                        self.poll_seconds)
            self._changed.set()  # keeps the loop checking until listening works
            await asyncio.sleep(self.poll_seconds)

    async def close(self) -> None:
        if self._stop_listening:
            stop, self._stop_listening = self._stop_listening, None
            await stop()
        shutil.rmtree(self._folder, ignore_errors=True)
