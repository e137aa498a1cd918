"""One camera, many viewers: a single pull of the source, fanned out packet by packet.

A ``CameraFeed`` opens its source when the first viewer subscribes and closes it a configurable
idle time after the last one leaves. It keeps the current GOP (parameter sets and every packet
since the last key frame) so a viewer who joins mid-GOP starts decoding at once instead of waiting
for the camera's next key frame. Packets are never re-encoded, and each access unit is cut into
RTP payloads once per camera, when a viewer first sends it (``access_unit``): viewers share them
and write only their own RTP headers (``packetized_sender``). Units come from the source by
callback (``CameraSource.deliver``): an RTSP camera's unit is fanned out in the read callback
that completed it, without a task step.

Each subscriber has a bounded queue. A viewer that cannot keep up loses packets up to the next key
frame (never a partial GOP, which would show as smeared video) and the drop is logged.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Self

import structlog

from edge_agent.access_unit import AccessUnit
from edge_agent.camera_sources.base import TIME_BASE, CameraSource, EncodedPacket
from edge_agent.exceptions import SourceError

log = structlog.get_logger(__name__)

GOP_CACHE_MAX_PACKETS = 600  # 40 s at 15 fps: more than any sane GOP


TIMELINE_CLOCK = TIME_BASE  # RTP's video clock


class _Timeline:
    """One continuous, increasing timeline for viewers across the source's reconnections.

    Each RTSP session starts its timestamps afresh; without this, a viewer kept across a
    reconnection would see time jump backwards. Packets after a reconnection continue one frame
    after the last one sent.
    """

    def __init__(self) -> None:
        self._offset = 0
        self._last: int | None = None
        self._step = 6000  # one frame at 15 fps until the stream shows its own
        self._rebase = True

    def new_connection(self) -> None:
        self._rebase = True

    def place(self, encoded: EncodedPacket) -> int:
        time_base = encoded.time_base
        if time_base is TIMELINE_CLOCK or time_base == TIMELINE_CLOCK:  # no Fraction maths
            pts = encoded.pts
        else:
            pts = round(encoded.pts * encoded.time_base / TIMELINE_CLOCK)
        if self._rebase:
            self._rebase = False
            self._offset = 0 if self._last is None else self._last + self._step - pts
        placed = pts + self._offset
        if self._last is not None and placed > self._last:
            self._step = min(placed - self._last, 90_000)
        self._last = placed if self._last is None else max(self._last, placed)
        return placed


class FeedState(enum.Enum):
    IDLE = "idle"            # nobody watches; the source is closed
    STARTING = "starting"    # connecting to the source
    LIVE = "live"            # packets arrive
    FAILED = "failed"        # the source failed; retrying while anyone watches
    CLOSED = "closed"


@dataclass(frozen=True)
class FeedHealth:
    state: FeedState
    reason: str = ""         # refused, unauthorized, timeout, stalled, codec (when FAILED)
    detail: str = ""


HealthListener = Callable[[str, FeedHealth], Awaitable[None]]


class FeedSubscription:
    """A viewer's place on the feed: an ordered, bounded queue of shared ``AccessUnit``s."""

    def __init__(self, feed: CameraFeed, maxsize: int, viewer: bool = True) -> None:
        self.feed = feed
        self.viewer = viewer  # False: an evidence recorder or pre-roll, not a person watching
        self.queue: asyncio.Queue[AccessUnit | None] = asyncio.Queue(maxsize)
        self.waiting_for_keyframe = False
        self._ended = False
        self.dropped = 0
        self.delivered = 0

    async def get(self) -> AccessUnit | None:
        """The next access unit; ``None`` when the feed has closed."""
        if self._ended:
            return None
        unit = await self.queue.get()
        if unit is None:
            self._ended = True
        else:
            self.delivered += 1
        return unit

    def take_ready(self) -> list[AccessUnit]:
        """Every access unit already queued, without waiting (a sender sends them together).

        Stops before the end-of-feed marker, which the next ``get()`` returns.
        """
        ready: list[AccessUnit] = []
        while not self._ended and not self.queue.empty():
            unit = self.queue.get_nowait()
            if unit is None:
                self._ended = True
            else:
                ready.append(unit)
        self.delivered += len(ready)
        return ready

    def offer(self, packet: AccessUnit, keyframe: bool) -> None:
        if self.waiting_for_keyframe:
            if not keyframe:
                self.dropped += 1
                return
            self.waiting_for_keyframe = False
        try:
            self.queue.put_nowait(packet)
        except asyncio.QueueFull:
            # Overflow policy: drop what is queued and skip to the next key frame.
            while not self.queue.empty():
                self.queue.get_nowait()
                self.dropped += 1
            self.dropped += 1
            self.waiting_for_keyframe = True
            log.warning("viewer too slow, skipping to next key frame",
                        camera=self.feed.camera_id, dropped=self.dropped)

    def end(self) -> None:
        while True:
            try:
                self.queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()

    def unsubscribe(self) -> None:
        self.feed.unsubscribe(self)


class CameraFeed:
    """Owns one camera source while anyone watches; an async context manager."""

    def __init__(self, source: CameraSource, *, idle_close_seconds: float = 10.0,
                 on_health: HealthListener | None = None, subscriber_queue: int = 240,
                 retry_initial: float = 0.5, retry_max: float = 30.0,
                 gop_cache: bool = True) -> None:
        self.camera_id = source.camera_id
        self.source = source
        self._idle_close = idle_close_seconds
        self._on_health = on_health
        self._queue_size = subscriber_queue
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._subscribers: list[FeedSubscription] = []
        self._gop: list[tuple[AccessUnit, bool]] = []
        self._pump: asyncio.Task[None] | None = None
        self._idle_timer: asyncio.Task[None] | None = None
        self._health = FeedHealth(FeedState.IDLE)
        self._log = log.bind(camera=self.camera_id)
        self.packets_in = 0
        self.keyframes_in = 0
        self.last_packet_at: float | None = None  # loop time of the latest packet from the camera
        #: Off only to measure what the cache is worth (bench/gop_cache.py).
        self.gop_cache = gop_cache
        #: On only to compare with servers that forward filler data (bench/janus_compare.py).
        self.keep_filler = False
        self._timeline = _Timeline()

    @property
    def health(self) -> FeedHealth:
        return self._health

    @property
    def viewers(self) -> int:
        return sum(s.viewer for s in self._subscribers)

    @property
    def cached_packets(self) -> int:
        """Packets in the GOP cache: the key frame and every packet since."""
        return len(self._gop)

    @property
    def streaming(self) -> bool:
        return self._pump is not None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def subscribe(self, *, viewer: bool = True) -> FeedSubscription:
        """Attach a viewer; it receives the cached GOP first, then live packets."""
        if self._health.state is FeedState.CLOSED:
            raise RuntimeError(f"feed {self.camera_id} is closed")
        subscription = FeedSubscription(self, self._queue_size, viewer)
        if self.gop_cache:
            for packet, keyframe in self._gop:
                subscription.offer(packet, keyframe)
        if not self._gop or not self.gop_cache:
            subscription.waiting_for_keyframe = True
        self._subscribers.append(subscription)
        self._cancel_idle_timer()
        if self._pump is None:
            self._start_pump()
        return subscription

    def _start_pump(self) -> None:
        self._pump = asyncio.create_task(self._run_source(), name=f"feed:{self.camera_id}")

    def unsubscribe(self, subscription: FeedSubscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)
        if not self._subscribers and self._pump is not None and self._idle_timer is None:
            self._idle_timer = asyncio.create_task(self._close_when_idle(),
                                                   name=f"feed-idle:{self.camera_id}")

    async def close(self) -> None:
        """Stop the source and end every subscription; idempotent."""
        self._cancel_idle_timer()
        await self._stop_pump()
        for subscription in self._subscribers:
            subscription.end()
        self._subscribers.clear()
        self._health = FeedHealth(FeedState.CLOSED)

    def _cancel_idle_timer(self) -> None:
        timer, self._idle_timer = self._idle_timer, None
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()

    async def _close_when_idle(self) -> None:
        await asyncio.sleep(self._idle_close)
        self._idle_timer = None
        if self._subscribers:
            return
        self._log.info("closing idle camera", idle_seconds=self._idle_close)
        await self._stop_pump()
        if self._subscribers:  # a viewer arrived while the camera was closing
            self._start_pump()
        else:
            await self._set_health(FeedHealth(FeedState.IDLE))

    async def _stop_pump(self) -> None:
        """Stop pulling the camera; ``streaming`` stays true until its connection is closed."""
        pump = self._pump
        if pump is None:
            return
        pump.cancel()
        try:
            await pump
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        finally:
            if self._pump is pump:
                self._pump = None
            self._gop.clear()

    async def _set_health(self, health: FeedHealth) -> None:
        if health == self._health:
            return
        self._health = health
        self._log.info("camera feed state", state=health.state.value, reason=health.reason or None)
        if self._on_health is not None:
            await self._on_health(self.camera_id, health)

    async def _run_source(self) -> None:
        delay = self._retry_initial

        async def live() -> None:
            nonlocal delay
            await self._set_health(FeedHealth(FeedState.LIVE))
            delay = self._retry_initial

        while True:
            await self._set_health(FeedHealth(FeedState.STARTING))
            self._timeline.new_connection()
            try:
                # Units come to _fan_out by callback (no task step per unit where the source
                # can); a cancelled pump closes the camera connection now, not at GC time.
                await self.source.deliver(self._fan_out, live)
                raise SourceError(self.camera_id, "stopped", "the stream ended")
            except SourceError as exc:
                await self._set_health(FeedHealth(FeedState.FAILED, exc.reason, exc.detail))
                self._gop.clear()
                for subscription in self._subscribers:
                    subscription.waiting_for_keyframe = True
            except Exception as exc:  # noqa: BLE001 - reported with its traceback, then retried
                # A source bug must not end the feed for good: report it and retry like a failure.
                self._log.exception("camera source crashed")
                await self._set_health(FeedHealth(FeedState.FAILED, "internal", type(exc).__name__))
                self._gop.clear()
            wait = delay * random.uniform(0.8, 1.2)
            self._log.info("camera source retry", retry_in=round(wait, 2))
            await asyncio.sleep(wait)
            delay = min(delay * 2, self._retry_max)

    def _fan_out(self, encoded: EncodedPacket) -> None:
        self.packets_in += 1
        self.keyframes_in += encoded.keyframe
        self.last_packet_at = asyncio.get_running_loop().time()
        packet = AccessUnit.packetized(encoded.data, self._timeline.place(encoded),
                                       encoded.keyframe, keep_filler=self.keep_filler)
        if encoded.keyframe:
            self._gop.clear()
        if encoded.keyframe or self._gop:
            if len(self._gop) < GOP_CACHE_MAX_PACKETS:
                self._gop.append((packet, encoded.keyframe))
            else:
                self._gop.clear()
        for subscription in self._subscribers:
            subscription.offer(packet, encoded.keyframe)
