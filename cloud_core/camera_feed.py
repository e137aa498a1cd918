"""``CameraFeed``: the consoles' camera snapshot and the changes pushed after it.

A console fetches the snapshot once (``snapshot``: every camera at a version, JSON, gzip-ready),
then follows the change stream from that version. After every registry commit the feed reads the
cameras changed since what it last published (``Registry.changes_between``), at most once per
``interval``, serialises that once, off the loop, and every connected console receives the same
text. When more changed than a push should carry (a city-wide reconnect), the feed publishes
``reset`` instead and consoles refetch the snapshot, which is built once per version and cached.

Versions come from the registry's change log; a console asking for changes since a version older
than ``log_span`` versions, newer than the registry's, or beyond the retained events gets
``reset``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

import structlog

from cloud_core.registry import CONSOLE_FIELDS, Registry

log = structlog.get_logger(__name__)

EventKind = Literal["cameras", "agents", "reset"]


@dataclass(frozen=True)
class FeedEvent:
    seq: int            # position in the feed, for followers
    kind: EventKind
    version: int        # the camera version the console is at after this event
    data: str           # the SSE data line (JSON)


@dataclass(frozen=True)
class Snapshot:
    version: int
    body: bytes         # JSON
    gzipped: bytes


class FeedLost(Exception):
    """The follower fell behind the retained events: it must refetch the snapshot."""


class CameraFeed:
    """An async context manager owning one publishing task; ``notify`` after every commit."""

    def __init__(self, registry: Registry, *, interval: float = 0.5, keep_events: int = 256,
                 log_span: int = 100_000, max_push_rows: int = 5_000) -> None:
        self._registry = registry
        self._interval = interval
        self._log_span = log_span
        self._max_push_rows = max_push_rows
        self._events: deque[FeedEvent] = deque(maxlen=keep_events)
        self._seq = 0
        self._published = registry.camera_version()
        self._target = self._published
        self._agents = registry.agents()
        self._wake = asyncio.Event()
        self._new_event = asyncio.Condition()
        self._snapshot: Snapshot | None = None
        self._snapshot_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.followers = 0

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name="camera-feed")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    @property
    def version(self) -> int:
        """The newest version whose changes have been published."""
        return self._published

    @property
    def agents(self) -> dict[str, bool]:
        return dict(self._agents)

    def notify(self, version: int) -> None:
        """The registry committed up to ``version`` (agents may have changed too)."""
        self._target = max(self._target, version)
        self._wake.set()

    # --- the snapshot ---------------------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        """Every camera as the console shows it; built off the loop, once per version."""
        async with self._snapshot_lock:
            current = self._registry.camera_version()
            if self._snapshot is None or self._snapshot.version != current:
                self._snapshot = await asyncio.to_thread(self._build_snapshot)
            return self._snapshot

    def _build_snapshot(self) -> Snapshot:
        version, rows = self._registry.snapshot_rows()
        body = json.dumps({"version": version, "fields": list(CONSOLE_FIELDS),
                           "cameras": rows}, separators=(",", ":")).encode()
        return Snapshot(version, body, gzip.compress(body, compresslevel=5, mtime=0))

    # --- following ------------------------------------------------------------------------

    def start(self, since: int) -> tuple[int, int, bool]:
        """Where a follower at ``since`` starts: (seq, catch-up upto version, must reset)."""
        current = self._registry.camera_version()
        reset = since > current or since < self._published - self._log_span or since < 0
        return self._seq, self._published, reset

    async def catch_up(self, since: int, upto: int) -> str | None:
        """The changes (since, upto] as one event's data; None when too many (reset instead).

        ``since`` may be newer than ``upto``: a snapshot is read from the registry, which runs up
        to ``interval`` ahead of what the feed has pushed. Such a follower needs no catch-up; the
        next push covers it (``next_events`` callers skip what it already has).
        """
        if since >= upto:
            return ""
        rows = await asyncio.to_thread(self._registry.changes_between, since, upto,
                                       self._max_push_rows)
        if rows is None:
            return None
        return _cameras_data(upto, rows)

    async def next_events(self, seq: int) -> list[FeedEvent]:
        """Events after ``seq``, waiting for one; raises FeedLost when they are gone."""
        async with self._new_event:
            await self._new_event.wait_for(lambda: self._seq > seq)
        if self._events and self._events[0].seq > seq + 1:
            raise FeedLost(seq)
        return [e for e in self._events if e.seq > seq]

    # --- publishing -----------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            started = loop.time()
            try:
                await self._publish()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A failed read is retried at the next commit; followers keep their place.
                log.exception("camera feed publish failed")
            await asyncio.sleep(max(0.0, self._interval - (loop.time() - started)))

    async def _publish(self) -> None:
        agents = self._registry.agents()
        if agents != self._agents:
            self._agents = agents
            await self._append("agents", self._published, json.dumps({"agents": agents}))
        target = self._target
        if target <= self._published:
            return
        rows = await asyncio.to_thread(self._registry.changes_between, self._published, target,
                                       self._max_push_rows)
        self._published = target
        if rows is None:
            await self._append("reset", target, json.dumps({"version": target}))
        elif rows:
            data = await asyncio.to_thread(_cameras_data, target, rows)
            await self._append("cameras", target, data)

    async def _append(self, kind: EventKind, version: int, data: str) -> None:
        self._seq += 1
        self._events.append(FeedEvent(self._seq, kind, version, data))
        async with self._new_event:
            self._new_event.notify_all()


def _cameras_data(version: int, rows: list[tuple[str, str, str, float, float, str]]) -> str:
    return json.dumps({"version": version, "changes": rows}, separators=(",", ":"))
