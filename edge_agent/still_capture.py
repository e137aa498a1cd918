"""Stills for 112 dispatch: one JPEG of a camera's latest key frame, taken here at the agent.

The core asks with a ``StillRequest`` carrying a grant signed for the still's id (one use, like a
session's); the agent checks it, takes the camera's cached GOP (or waits for the next key frame
if nobody is watching), decodes that one key frame once and encodes it as a JPEG, off the event
loop. No video leaves the district: only this one picture, which the core hashes into the audit
log before any officer sees it.
"""

from __future__ import annotations

import asyncio
from fractions import Fraction
from typing import Any, Final

import av
import structlog

from edge_agent.camera_feed import CameraFeed
from edge_agent.exceptions import GrantRejected, OfferRejected
from edge_agent.grant_check import GrantVerifier
from protos.safetynet.v1 import mqtt_pb2

log = structlog.get_logger(__name__)

KEYFRAME_TIMEOUT_S: Final = 5.0
MAX_DECODE_PACKETS: Final = 30
JPEG_QUALITY: Final = 5      # mjpeg qscale: 2 (best) .. 31


async def take_still(request: mqtt_pb2.StillRequest, feeds: dict[str, CameraFeed],
                     grants: GrantVerifier | None) -> bytes:
    """The JPEG answer to ``request``; OfferRejected when the grant or the camera says no."""
    feed = feeds.get(request.camera_id)
    if feed is None:
        raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_UNKNOWN_CAMERA,
                            f"camera {request.camera_id!r} is not in this district")
    if grants is None:
        raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_GRANT_REJECTED, "this agent accepts no grant")
    try:
        grants.check(request.grant, request.camera_id, request.still_id)
    except GrantRejected as exc:
        raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_GRANT_REJECTED, str(exc)) from exc
    packets = await _key_frame_packets(feed)
    jpeg = await asyncio.to_thread(_jpeg_of, packets)
    log.info("still taken", camera=request.camera_id, still=request.still_id, bytes=len(jpeg))
    return jpeg


async def _key_frame_packets(feed: CameraFeed) -> list[av.Packet[Any]]:
    """The latest key frame and a few packets after it (enough for any decoder to emit it)."""
    subscription = feed.subscribe()
    packets: list[av.Packet[Any]] = []
    try:
        async with asyncio.timeout(KEYFRAME_TIMEOUT_S):
            while len(packets) < 2:
                unit = await subscription.get()
                if unit is None:
                    break
                packets.append(av.Packet(bytes(unit)))
    except TimeoutError as exc:
        raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_CAMERA_OFFLINE,
                            "no key frame from the camera within 5 s") from exc
    finally:
        feed.unsubscribe(subscription)
    if not packets:
        raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_CAMERA_OFFLINE, "the camera sent nothing")
    return packets


def _jpeg_of(packets: list[av.Packet[Any]]) -> bytes:
    """Decode the first frame of ``packets`` (H.264) and encode it as one JPEG."""
    decoder = av.CodecContext.create("h264", "r")
    frame = None
    for packet in packets[:MAX_DECODE_PACKETS]:
        frames = decoder.decode(packet)
        if frames:
            frame = frames[0]
            break
    if frame is None:
        frames = decoder.decode(None)
        frame = frames[0] if frames else None
    if frame is None:
        raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_INTERNAL, "the key frame did not decode")
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = frame.width, frame.height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    encoder.options = {"qmin": str(JPEG_QUALITY), "qmax": str(JPEG_QUALITY)}
    picture = frame.reformat(format="yuvj420p")
    out = encoder.encode(picture) + encoder.encode(None)
    return b"".join(bytes(p) for p in out)
