"""Recording an evidence clip: the camera's own H.264, remuxed into MP4 segments, never re-encoded.

A ``ClipRecorder`` takes a camera feed subscription (which starts at the GOP cache's key frame)
and, for a camera being watched, the ``PreRoll`` of the last seconds before the request. It
writes segments of about ``segment_seconds`` each, every one starting at a key frame, with
PyAV's MP4 muxer fed the packets exactly as they came (only their container changes). Each
segment is hashed as it is closed; the recorder ends at ``stop()``, at the maximum length, when
the disk budget is spent, or when the feed closes, then hands the segments to the store.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import structlog

from edge_agent.access_unit import AccessUnit
from edge_agent.camera_feed import CameraFeed, FeedSubscription
from runtime.evidence_manifest import file_sha256

log = structlog.get_logger(__name__)

CLOCK = Fraction(1, 90_000)
#: What the recorder takes from the feed: one access unit (its bytes and its 90 kHz ``pts``).
AvPacket = AccessUnit
Packet = tuple[AvPacket, bool]


@dataclass(frozen=True)
class SegmentInfo:
    file: str
    sha256: str
    bytes: int
    start_pts: int
    frames: int


def is_keyframe(packet: AvPacket) -> bool:
    """Whether the access unit holds an IDR slice."""
    return packet.keyframe


class PreRoll:
    """The last ``seconds`` of a watched camera, always from a key frame, in memory."""

    def __init__(self, feed: CameraFeed, seconds: float) -> None:
        self._seconds = seconds
        self._packets: deque[Packet] = deque()
        self._subscription = feed.subscribe(viewer=False)
        self._task = asyncio.create_task(self._fill(), name=f"preroll:{feed.camera_id}")

    async def _fill(self) -> None:
        while (packet := await self._subscription.get()) is not None:
            self.add(packet, is_keyframe(packet))

    def add(self, packet: AvPacket, keyframe: bool) -> None:
        self._packets.append((packet, keyframe))
        newest = packet.pts or 0
        # Drop whole GOPs once a later key frame is itself at least `seconds` old.
        while True:
            later = next((i for i, (p, k) in enumerate(self._packets)
                          if i > 0 and k and (newest - (p.pts or 0)) * CLOCK >= self._seconds), None)
            if later is None:
                return
            for _ in range(later):
                self._packets.popleft()

    def snapshot(self) -> list[Packet]:
        packets = list(self._packets)
        start = next((i for i, (_, k) in enumerate(packets) if k), len(packets))
        return packets[start:]

    async def close(self) -> None:
        self._subscription.unsubscribe()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class SegmentWriter:
    """One MP4 segment (blocking file I/O: call it from a worker thread)."""

    def __init__(self, path: Path, template: av.VideoStream) -> None:
        self.path = path
        self._container = av.open(str(path), "w", format="mp4")
        self._stream = self._container.add_stream_from_template(template)
        self._stream.time_base = CLOCK
        self._first: int | None = None
        self.frames = 0

    def write(self, packet: AvPacket, keyframe: bool) -> None:
        # A copy: the feed's packet is shared with every viewer and muxing rescales it.
        copy = av.Packet(bytes(packet))
        pts = packet.pts or 0
        if self._first is None:
            self._first = pts
        copy.pts = copy.dts = pts - self._first
        copy.time_base = CLOCK
        copy.is_keyframe = keyframe
        copy.stream = self._stream
        self._container.mux(copy)
        self.frames += 1

    @property
    def start_pts(self) -> int:
        return self._first or 0

    def close(self) -> SegmentInfo:
        self._container.close()
        return SegmentInfo(self.path.name, file_sha256(self.path), self.path.stat().st_size,
                           self.start_pts, self.frames)


def stream_template(keyframe: AvPacket) -> tuple[av.container.InputContainer, av.VideoStream]:
    """The camera's codec parameters, read from its key frame's in-band SPS/PPS (no decoding)."""
    container = av.open(io.BytesIO(bytes(keyframe)), "r", format="h264",
                        options={"probesize": "32768", "analyzeduration": "0"})
    return container, container.streams.video[0]


SealedListener = Callable[[list[SegmentInfo], str], Awaitable[None]]


class ClipRecorder:
    """Writes one clip into ``directory`` until stopped; ``done`` resolves to the end reason."""

    def __init__(self, *, clip_id: str, feed: CameraFeed, directory: Path, pre_roll: list[Packet],
                 max_seconds: float, segment_seconds: float,
                 room_left: Callable[[int], bool]) -> None:
        self.clip_id = clip_id
        self.directory = directory
        self.segments: list[SegmentInfo] = []
        self.first_segment_at: float | None = None  # monotonic time of the first frame on disk
        self._max = max_seconds
        self._segment_seconds = segment_seconds
        self._room_left = room_left
        self._pre_roll = pre_roll
        self._subscription: FeedSubscription = feed.subscribe(viewer=False)
        self._stop_reason = ""
        self._log = log.bind(clip=clip_id, camera=feed.camera_id)
        self.done: asyncio.Task[str] = asyncio.create_task(self._run(), name=f"clip:{clip_id}")

    def stop(self, reason: str) -> None:
        if not self._stop_reason:
            self._stop_reason = reason
            self._subscription.end()

    async def _packets(self) -> list[Packet]:
        """The next packets: the pre-roll first (once), then the live feed."""
        if self._pre_roll:
            packets, self._pre_roll = self._pre_roll, []
            return packets
        packet = await self._subscription.get()
        return [] if packet is None else [(packet, is_keyframe(packet))]

    async def _run(self) -> str:
        deadline = time.monotonic() + self._max + 10.0  # a stalled camera still ends the clip
        writer: SegmentWriter | None = None
        template: tuple[av.container.InputContainer, av.VideoStream] | None = None
        first_pts: int | None = None
        last_pts = -1
        reason = "max length reached"
        try:
            while True:
                async with asyncio.timeout_at(asyncio.get_running_loop().time()
                                              + max(0.0, deadline - time.monotonic())):
                    packets = await self._packets()
                if not packets:
                    reason = self._stop_reason or "camera feed closed"
                    break
                for packet, keyframe in packets:
                    pts = packet.pts or 0
                    if pts <= last_pts:
                        continue  # the GOP cache overlaps the pre-roll's tail
                    if writer is None and not keyframe:
                        continue
                    if first_pts is not None and (pts - first_pts) * CLOCK >= self._max:
                        raise _Finished("max length reached")
                    if keyframe and (writer is None or
                                     (pts - writer.start_pts) * CLOCK >= self._segment_seconds):
                        if not self._room_left(sum(s.bytes for s in self.segments)):
                            raise _Finished("disk budget reached")
                        if template is None:
                            template = stream_template(packet)
                        writer = await self._roll(writer, template[1])
                        first_pts = pts if first_pts is None else first_pts
                    assert writer is not None
                    await asyncio.to_thread(writer.write, packet, keyframe)
                    if self.first_segment_at is None:
                        self.first_segment_at = time.monotonic()  # first frame is in a file
                    last_pts = pts
        except _Finished as finished:
            reason = finished.reason
        except TimeoutError:
            reason = "camera stalled past the clip's length"
        finally:
            self._subscription.unsubscribe()
            if writer is not None:
                self.segments.append(await asyncio.to_thread(writer.close))
            if template is not None:
                template[0].close()
        self._log.info("evidence clip ended", reason=reason, segments=len(self.segments))
        return reason

    async def _roll(self, writer: SegmentWriter | None, template: av.VideoStream) -> SegmentWriter:
        if writer is not None:
            self.segments.append(await asyncio.to_thread(writer.close))
        path = self.directory / f"segment-{len(self.segments):05d}.mp4"
        return await asyncio.to_thread(SegmentWriter, path, template)


class _Finished(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason
