"""Which core replica does the once-only jobs (signing checkpoints of the shared chain).

On SQLite there is one process, always the leader (``SoleLeader``). On PostgreSQL the leader is
the replica holding the session-level ``pg_try_advisory_lock(LEADER_LOCK)`` on a connection of
its own (``AdvisoryLockLeader``). The server releases the lock when that connection ends, so when
a leader dies (its socket closes) another replica, retrying every ``retry_interval``, takes over
within about a second. A leader that cannot reach the database within ``probe_timeout`` steps
down at once; keepalives on both ends of the leader's socket make the server end the session of
a silent leader within about 9 s (an overlap is possible only in that window, and checkpoints,
the job it guards, are written under the chain's own lock, so they stay in order even then).
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Any, Final, Protocol, Self

import structlog

from cloud_core.exceptions import DatabaseUnavailable
from cloud_core.storage.base import Location, is_postgres
from cloud_core.storage.dsn import connect_async, first_line, redact

log = structlog.get_logger(__name__)

LEADER_LOCK: Final = 0x5AFE0A0D1702
# The server's side of the leader's socket: a leader cut off without a FIN loses its session
# (and the lock) in about 9 s instead of the kernel's two hours.
SERVER_KEEPALIVES: Final = ("SET tcp_keepalives_idle = 5", "SET tcp_keepalives_interval = 2",
                            "SET tcp_keepalives_count = 2")


class Leadership(Protocol):
    """Whether this process is the leader now; ``wait_leader`` until it is."""

    @property
    def is_leader(self) -> bool: ...

    async def wait_leader(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None: ...


class SoleLeader:
    """One process on a SQLite file: always the leader."""

    is_leader = True

    async def wait_leader(self) -> None:
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None


class AdvisoryLockLeader:
    """``async with AdvisoryLockLeader(dsn) as leader``: competes for the lock until closed.

    Entering connects once (``DatabaseUnavailable`` at once for a wrong password or a dead
    server) and tries the lock; one owned task then keeps trying (follower) or probing (leader).
    """

    def __init__(self, dsn: str, *, key: int = LEADER_LOCK, retry_interval: float = 0.5,
                 probe_interval: float = 1.0, probe_timeout: float = 3.0) -> None:
        self._dsn = dsn
        self._key = key
        self._retry = retry_interval
        self._probe = probe_interval
        self._probe_timeout = probe_timeout
        self._leader = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._log = log.bind(database=redact(dsn), key=key)

    @property
    def is_leader(self) -> bool:
        return self._leader.is_set()

    async def wait_leader(self) -> None:
        await self._leader.wait()

    async def __aenter__(self) -> Self:
        conn = await self._connect()
        try:
            await self._try_lock(conn)
        except BaseException:
            await conn.close()
            raise
        self._task = asyncio.create_task(self._run(conn), name="leadership")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop competing; the lock goes with the connection. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._set(False)

    async def _run(self, conn: Any) -> None:
        import psycopg

        while True:
            try:
                await self._hold(conn)
            except (psycopg.Error, TimeoutError) as exc:
                self._log.warning("leadership_connection_lost", error=first_line(exc))
            finally:
                self._set(False)
                with contextlib.suppress(psycopg.Error):
                    await conn.close()
            conn = await self._reconnect()

    async def _hold(self, conn: Any) -> None:
        """Try the lock until it is ours, then probe the connection that holds it."""
        while True:
            if self.is_leader:
                async with asyncio.timeout(self._probe_timeout):
                    await conn.execute("SELECT 1")
                await asyncio.sleep(self._probe)
            else:
                await self._try_lock(conn)
                if not self.is_leader:
                    await asyncio.sleep(self._retry)

    async def _try_lock(self, conn: Any) -> None:
        async with asyncio.timeout(self._probe_timeout):
            cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,))
            row = await cursor.fetchone()
        self._set(bool(row and row[0]))

    async def _reconnect(self) -> Any:
        delay = self._retry
        while True:
            await asyncio.sleep(delay)
            try:
                return await self._connect()
            except DatabaseUnavailable as exc:
                self._log.warning("leadership_reconnect_failed", error=exc.reason)
                delay = min(delay * 2, 5.0)

    async def _connect(self) -> Any:
        import psycopg

        conn = await connect_async(self._dsn, autocommit=True)
        try:
            for statement in SERVER_KEEPALIVES:
                await conn.execute(statement.encode())
        except psycopg.Error as exc:
            await conn.close()
            raise DatabaseUnavailable(redact(self._dsn), first_line(exc)) from exc
        return conn

    def _set(self, leader: bool) -> None:
        if leader != self.is_leader:
            self._log.info("leadership", leader=leader)
        if leader:
            self._leader.set()
        else:
            self._leader.clear()


def open_leadership(location: Location) -> Leadership:
    """The leadership for storage at ``location``: by advisory lock on PostgreSQL, else sole."""
    if is_postgres(location):
        return AdvisoryLockLeader(str(location))
    return SoleLeader()
