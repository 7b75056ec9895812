"""A throwaway PostgreSQL cluster owned by the test run: initdb in a temporary folder, a private Unix socket and a
loopback port, stopped and deleted at the end. Each test gets a fresh schema (`new_url()`), so tests never see
each other's rows and no database is ever created or dropped outside this cluster.

`CAVEAT_TEST_PG_URL=postgresql://...` uses an existing server instead (each test still gets its own schema).
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

#: Storage backends the storage and Discord suites run against (`CAVEAT_TEST_BACKENDS=sqlite` for SQLite only).
BACKENDS = [b.strip() for b in os.environ.get("CAVEAT_TEST_BACKENDS", "sqlite,postgresql").split(",") if b.strip()]


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)),
                                       None)
    if not found:
        raise RuntimeError(f"PostgreSQL's `{name}` was not found (Debian: apt-get install postgresql). The storage and"
                           " Discord tests run against SQLite and PostgreSQL; CAVEAT_TEST_BACKENDS=sqlite runs"
                           " SQLite only.")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """One PostgreSQL server for the whole test session."""

    def __init__(self):
        self.url = os.environ.get("CAVEAT_TEST_PG_URL")
        self.folder: Path | None = None
        self._as: list[str] = []

    def start(self) -> "PgCluster":
        if self.url:
            return self
        initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
        self.folder = Path(tempfile.mkdtemp(prefix="caveat-pg-"))
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the postgres system user
            shutil.chown(self.folder, "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        data, port = self.folder / "data", _free_port()
        self._run([initdb, "-D", str(data), "-A", "trust", "-U", "caveat", "--no-sync", "-E", "UTF8"])
        self._run([pg_ctl, "-D", str(data), "-l", str(self.folder / "server.log"), "-w", "-t", "60", "-o",
                   f"-p {port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
                   " -c synchronous_commit=off -c full_page_writes=off -c max_connections=300", "start"])
        self.url = f"postgresql://caveat@127.0.0.1:{port}/postgres"
        return self

    def _run(self, cmd: list[str]) -> None:
        done = subprocess.run(self._as + cmd, capture_output=True, text=True, cwd=self.folder)
        if done.returncode:
            log = self.folder / "server.log" if self.folder else None
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{Path(cmd[0]).name} failed ({done.returncode}): {done.stderr[-2000:]}\n{tail}")

    def new_url(self) -> str:
        """A URL whose search_path is a new, empty schema of its own."""
        import asyncio

        import asyncpg

        schema = "t_" + uuid.uuid4().hex[:16]

        async def create():
            conn = await asyncpg.connect(self.url)
            try:
                await conn.execute(f"CREATE SCHEMA {schema}")
            finally:
                await conn.close()
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(create())
        else:  # called from a running loop: do it on a helper thread with its own loop
            import concurrent.futures
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, create()).result()
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}search_path={schema}"

    def stop(self) -> None:
        if self.folder is None:
            return
        try:
            self._run([_binary("pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop"])
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
