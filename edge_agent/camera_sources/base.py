"""The camera source interface: one camera's H.264 access units, in order, as they arrive."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator

from simulators.synthetic_camera import EncodedPacket

__all__ = ["CameraSource", "EncodedPacket"]


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
    def packets(self) -> AsyncIterator[EncodedPacket]:
        """Connect and yield Annex B access units (SPS/PPS in band before each key frame)."""
