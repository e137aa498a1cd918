"""A district's edge agent, run on its own for the benchmarks, with two switches the product lacks.

    python bench/agent_process.py --config agent.toml [--no-gop-cache] [--mode passthrough|reencode]
                                  [--sender packetized|aiortc] [--no-gso] [--keep-filler]
                                  [--ffmpeg-pull]

``--no-gop-cache`` turns every camera's GOP cache off (what the cache is worth: bench/gop_cache.py).
``--mode reencode`` replaces the passthrough track with what aiortc does by default: the camera's
H.264 decoded once per camera (MediaRelay-style, frames shared as yuv420p) and every viewer's
sender encoding those frames with its own H.264 encoder (bench/passthrough_cpu.py).
``--sender aiortc`` sends passthrough tracks through aiortc's own RTP sender (one packetization,
one RTP build and one ``sendto`` per packet and viewer) instead of ``PacketizedRtpSender``: the
before of bench/media_path.py; ``--no-gso`` keeps ours but with one ``sendto`` per packet.
``--keep-filler`` sends the camera's filler data too, as Janus and aiortc's own sender do (the
simulated cameras pad with it). ``--ffmpeg-pull`` reads RTSP over TCP with FFmpeg's demuxer
on a thread, as before ``rtsp_client.py``. Everything else is the real ``EdgeAgent``. Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any, ClassVar

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

import edge_agent.viewer_session
from edge_agent.agent import EdgeAgent
from edge_agent.camera_feed import TIMELINE_CLOCK, CameraFeed, FeedSubscription
from edge_agent.camera_sources.rtsp import RtspSource
from edge_agent.config import AgentConfig
from edge_agent.packetized_sender import PacketizedRtpSender
from runtime.logs import configure_logging

FRAME_QUEUE = 30  # per viewer; a viewer's encoder that falls behind loses the oldest frames


class SharedDecoder:
    """One camera's packets decoded once; the frames go to every re-encoding viewer."""

    decoders: ClassVar[dict[CameraFeed, SharedDecoder]] = {}

    def __init__(self, feed: CameraFeed) -> None:
        self.feed = feed
        self.subscription = feed.subscribe()
        self.codec = av.CodecContext.create("h264", "r")
        self.queues: set[asyncio.Queue[av.VideoFrame | None]] = set()
        self.task = asyncio.create_task(self._run(), name=f"decode:{feed.camera_id}")

    @classmethod
    def attach(cls, feed: CameraFeed) -> asyncio.Queue[av.VideoFrame | None]:
        decoder = cls.decoders.get(feed) or cls.decoders.setdefault(feed, cls(feed))
        queue: asyncio.Queue[av.VideoFrame | None] = asyncio.Queue(FRAME_QUEUE)
        decoder.queues.add(queue)
        return queue

    def detach(self, queue: asyncio.Queue[av.VideoFrame | None]) -> None:
        self.queues.discard(queue)
        if not self.queues:
            self.decoders.pop(self.feed, None)
            self.task.cancel()
            self.subscription.unsubscribe()

    async def _run(self) -> None:
        while (unit := await self.subscription.get()) is not None:
            packet = av.Packet(unit.data)
            frames = await asyncio.to_thread(self.codec.decode, packet)
            for frame in frames:
                frame.pts, frame.time_base = unit.timestamp, TIMELINE_CLOCK
                for queue in list(self.queues):
                    if queue.full():
                        queue.get_nowait()
                    queue.put_nowait(frame)


class ReencodingTrack(MediaStreamTrack):
    """Takes the place of PassthroughVideoTrack: decoded frames, so the sender encodes them."""

    kind = "video"

    def __init__(self, subscription: FeedSubscription) -> None:
        super().__init__()
        feed = subscription.feed
        subscription.unsubscribe()  # the shared decoder holds the camera open instead
        self._queue = SharedDecoder.attach(feed)
        self._decoder = SharedDecoder.decoders[feed]

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._queue.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame

    def stop(self) -> None:
        if self.readyState == "live":
            self._decoder.detach(self._queue)
        super().stop()


async def run(args: argparse.Namespace) -> None:
    config = AgentConfig.from_toml(Path(args.config))
    edge_agent.viewer_session.ViewerSession.packetized_sender = args.sender == "packetized"
    PacketizedRtpSender.segmented_sends = not args.no_gso
    RtspSource.own_client = not args.ffmpeg_pull
    RtspSource.keep_filler = args.keep_filler
    if args.mode == "reencode":
        # The bench's own track in place of passthrough, to measure per-viewer encoding.
        edge_agent.viewer_session.PassthroughVideoTrack = ReencodingTrack  # type: ignore[attr-defined, assignment]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    agent = EdgeAgent(config)
    for feed in agent.feeds.values():
        feed.gop_cache = not args.no_gop_cache
        feed.keep_filler = args.keep_filler
    async with agent:
        await stop.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--mode", choices=["passthrough", "reencode"], default="passthrough")
    parser.add_argument("--sender", choices=["packetized", "aiortc"], default="packetized")
    parser.add_argument("--no-gso", action="store_true")
    parser.add_argument("--keep-filler", action="store_true")
    parser.add_argument("--ffmpeg-pull", action="store_true")
    parser.add_argument("--no-gop-cache", action="store_true")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    configure_logging(args.log_level)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
