"""An aiortc video track carrying the camera's H.264 access units as they are, never decoded.

Its sender is a ``PacketizedRtpSender``: it reads the track's feed subscription directly and
sends the payloads the feed packetized once for every viewer, so ``recv()`` is only called when
aiortc's own sender drives the track (it then packetizes each ``av.Packet`` itself; the
benchmarks keep that path to measure against).
"""

from __future__ import annotations

from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from edge_agent.camera_feed import TIMELINE_CLOCK, FeedSubscription


class PassthroughVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, subscription: FeedSubscription) -> None:
        super().__init__()
        self.subscription = subscription

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        unit = await self.subscription.get()
        if unit is None:
            self.stop()
            raise MediaStreamError
        packet = av.Packet(unit.data)
        packet.pts = packet.dts = unit.timestamp
        packet.time_base = TIMELINE_CLOCK
        return packet

    def stop(self) -> None:
        if self.readyState == "live":
            self.subscription.unsubscribe()
        super().stop()
