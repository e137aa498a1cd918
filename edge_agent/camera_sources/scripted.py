"""A scripted camera: plays given packets and raises given faults, the fake beside ``rtsp``.

Each connection (``packets()`` call) plays the next script in order; the last script is played
again for any later connection. A script is a list of steps: an ``EncodedPacket`` is yielded, a
``Fault`` raises ``SourceError`` there, like a camera that refuses or stalls at that point. A script
that runs out without a fault then holds the connection open, silent, until it is closed (a camera
that sends nothing more), or ends it (``then_end=True``: the stream ended). ``played`` is set each
``await source.played(n)`` returns once ``n`` connections have played their script to the end (or
to its fault), so a test waits on that instead of sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from edge_agent.camera_sources.base import TIME_BASE, CameraSource, EncodedPacket
from edge_agent.exceptions import SourceError

FRAME_TICKS = 6000  # one frame at 15 fps on the 90 kHz clock

# Annex B start code and the NAL header of an IDR slice (key frame) or a non-IDR slice.
_START = b"\x00\x00\x00\x01"
_IDR, _SLICE = b"\x65", b"\x41"


@dataclass(frozen=True)
class Fault:
    """Fail the connection here with ``SourceError(camera, reason, detail)``."""

    reason: str  # refused, unauthorized, timeout, stalled, codec
    detail: str = "scripted fault"


Step = EncodedPacket | Fault


def frame(index: int, *, keyframe: bool) -> EncodedPacket:
    """The ``index``-th frame of a stream: a one-NAL access unit, 15 fps timestamps."""
    return EncodedPacket(_START + (_IDR if keyframe else _SLICE) + index.to_bytes(4, "big"),
                         index * FRAME_TICKS, TIME_BASE, keyframe)


def gop(start: int, length: int) -> list[EncodedPacket]:
    """A key frame at ``start`` and ``length - 1`` delta frames after it."""
    return [frame(start + i, keyframe=i == 0) for i in range(length)]


class ScriptedSource(CameraSource):
    kind = "scripted"
    codec = "h264"

    def __init__(self, camera_id: str, scripts: Sequence[Sequence[Step]], *,
                 then_end: bool = False) -> None:
        if not scripts:
            raise ValueError("a scripted source needs at least one script")
        self.camera_id = camera_id
        self.opens = 0
        self.closes = 0
        self.yielded = 0
        self._scripts = [list(script) for script in scripts]
        self._then_end = then_end
        self._played = 0
        self._played_changed = asyncio.Condition()

    async def played(self, connections: int = 1) -> None:
        """Return once ``connections`` connections have played their whole script."""
        async with self._played_changed:
            await self._played_changed.wait_for(lambda: self._played >= connections)

    async def _script_done(self) -> None:
        async with self._played_changed:
            self._played += 1
            self._played_changed.notify_all()

    async def packets(self) -> AsyncGenerator[EncodedPacket, None]:
        script = self._scripts[min(self.opens, len(self._scripts) - 1)]
        self.opens += 1
        try:
            for step in script:
                if isinstance(step, Fault):
                    await self._script_done()
                    raise SourceError(self.camera_id, step.reason, step.detail)
                self.yielded += 1
                yield step
            await self._script_done()
            if not self._then_end:
                await asyncio.Event().wait()  # connected, silent, until closed
        finally:
            self.closes += 1
