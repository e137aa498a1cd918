"""An aiortc video track that hands the camera's H.264 packets to the RTP sender as they are.

aiortc packetizes an ``av.Packet`` without decoding it (``H264Encoder.pack``), so one camera pull
serves every viewer with no encoder in the agent.
"""

from __future__ import annotations

from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from edge_agent.camera_feed import FeedSubscription


class PassthroughVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, subscription: FeedSubscription) -> None:
        super().__init__()
        self._subscription = subscription
        self.packets_sent = 0

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self._subscription.get()
        if packet is None:
            self.stop()
            raise MediaStreamError
        self.packets_sent += 1
        return packet

    def stop(self) -> None:
        if self.readyState == "live":
            self._subscription.unsubscribe()
        super().stop()
