"""A throwaway PostgreSQL cluster on a free loopback port, for tests, benches and a local trial.

``initdb`` + ``pg_ctl`` from ``/usr/lib/postgresql/*/bin`` in a temporary folder; nothing else
on the machine is touched (its own PostgreSQL on 5432, if any, is never used). The ``postgres``
binary refuses to run as root, so as root the cluster runs as ``nobody`` (``runuser``), which is
given the folder. Password authentication (scram) on 127.0.0.1 only, so a wrong password fails.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Final, Self

SUPERUSER: Final = "safetynet"
RUN_AS: Final = "nobody"


def postgres_bin_dir() -> Path:
    """The newest installed ``/usr/lib/postgresql/N/bin`` holding initdb and pg_ctl."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                        key=lambda p: int(Path(p).parent.parent.name))
    if not candidates:
        raise FileNotFoundError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl;"
                                " apt-get install postgresql)")
    return Path(candidates[-1]).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayPostgres:
    """``with ThrowawayPostgres() as pg: pg.dsn("db")``: a cluster that lives for the block."""

    def __init__(self, password: str = "pilot-secret", *, durable: bool = False) -> None:
        """``durable``: fsync as in production (benches); tests run without it, for speed."""
        self.password = password
        self.durable = durable
        self.port = 0
        self._bin = postgres_bin_dir()
        self._dir: Path | None = None

    def dsn(self, database: str = "postgres", *, password: str | None = None) -> str:
        """A libpq URL for ``database`` as the superuser (``password`` to try another one)."""
        secret = self.password if password is None else password
        return f"postgresql://{SUPERUSER}:{secret}@127.0.0.1:{self.port}/{database}"

    @property
    def postmaster_pid(self) -> int:
        """The server's main process (its backends are its children), from ``postmaster.pid``."""
        if self._dir is None:
            raise RuntimeError("the cluster is not running")
        return int((self._dir / "data" / "postmaster.pid").read_text().split()[0])

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its DSN."""
        self._psql("postgres", f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def __enter__(self) -> Self:
        self._dir = Path(tempfile.mkdtemp(prefix="safetynet-pg-"))
        try:
            self._init()
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop the cluster (fast shutdown) and remove its folder; idempotent."""
        folder, self._dir = self._dir, None
        if folder is None:
            return
        try:
            if (folder / "data" / "postmaster.pid").exists():
                self._run([str(self._bin / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate",
                           "-w", "stop"], check=False)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _init(self) -> None:
        assert self._dir is not None
        pwfile = self._dir / "pwfile"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        if os.geteuid() == 0:
            entry = pwd.getpwnam(RUN_AS)
            for path in (self._dir, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run([str(self._bin / "initdb"), "-D", str(self._dir / "data"), "-U", SUPERUSER,
                   "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync",
                   "--locale=C"])
        pwfile.unlink()

    def _start(self) -> None:
        assert self._dir is not None
        self.port = free_port()
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                   f"-c unix_socket_directories={self._dir} "
                   f"-c fsync={'on' if self.durable else 'off'} "
                   "-c max_connections=60 -c shared_buffers=32MB")
        self._run([str(self._bin / "pg_ctl"), "-D", str(self._dir / "data"), "-o", options,
                   "-l", str(self._dir / "log"), "-w", "-t", "30", "start"])

    def _psql(self, database: str, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn(database), autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.encode())

    def _run(self, argv: list[str], *, check: bool = True) -> None:
        if os.geteuid() == 0:
            argv = ["runuser", "-u", RUN_AS, "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, check=False,
                                cwd=self._dir, timeout=60)
        if check and result.returncode != 0:
            log = ""
            if self._dir is not None and (self._dir / "log").exists():
                log = (self._dir / "log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{argv[-1]} failed ({result.returncode}): "
                               f"{result.stderr.strip()}\n{log}")
