"""The camera source interface: one camera's H.264 access units, in order, as they arrive."""

from __future__ import annotations

import abc
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["CLOCK_RATE", "TIME_BASE", "CameraSource", "EncodedPacket", "PacketSink"]

#: RTP's clock for video, and the time base of every packet a source yields.
CLOCK_RATE = 90_000
TIME_BASE = Fraction(1, CLOCK_RATE)


@dataclass(frozen=True)
class EncodedPacket:
    """One H.264 access unit in Annex B form, as a camera source delivers it."""

    data: bytes
    pts: int
    time_base: Fraction
    keyframe: bool


#: Takes each access unit as it arrives; it must not block (it may run in a read callback).
PacketSink = Callable[[EncodedPacket], None]


class CameraSource(abc.ABC):
    """A camera's stream. ``packets()`` opens the camera and yields until it fails or is closed.

    Failures raise ``edge_agent.exceptions.SourceError`` with a reason (refused, unauthorized,
    timeout, stalled, codec). Each call of ``packets()`` is one connection to the camera; the
    ``CameraFeed`` makes sure there is at most one at a time, whatever the number of viewers.
    """

    camera_id: str
    kind: str
    #: How many times this source connected to its camera: one pull per camera, however many viewers.
    opens: int = 0
    #: What the camera sends (FFmpeg's codec name), once known, and whether the agent re-encodes it.
    codec: str | None = None
    transcoding: bool = False

    @abc.abstractmethod
    def packets(self) -> AsyncGenerator[EncodedPacket, None]:
        """Connect and yield Annex B access units (SPS/PPS in band before each key frame)."""

    async def deliver(self, sink: PacketSink, on_live: Callable[[], Awaitable[None]]) -> None:
        """One connection, as ``packets()``, handing each access unit to ``sink``, in order.

        ``on_live`` is awaited once, before the first unit is handed over. Returns when the
        stream ends and raises what ``packets()`` raises. This default iterates ``packets()``
        (a task step per unit); a source that can calls ``sink`` where the unit is complete, in
        the loop's read callback, so that a unit wakes no task at all (``RtspSource``).
        """
        live = False
        async with contextlib.aclosing(self.packets()) as packets:
            async for packet in packets:
                if not live:
                    live = True
                    await on_live()
                sink(packet)
