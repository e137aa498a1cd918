"""Re-encoding to H.264, for the rare camera whose codec a WebRTC viewer cannot take as it is.

Only used when the inventory entry says ``transcode = true`` *and* the camera sends something
other than H.264 (H.265, MJPEG, MPEG-4 part 2). One encoder per camera, whatever the number of
viewers: the feed fans its packets out exactly as it does a passthrough camera's. It runs on the
RTSP source's reader thread, never on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

import av

CLOCK = Fraction(1, 90_000)


@dataclass(frozen=True)
class EncodedUnit:
    data: bytes
    pts: int          # in CLOCK units
    keyframe: bool


class H264Transcoder:
    """Decodes one video stream's packets and encodes the pictures with libx264 (Annex B)."""

    #: Encoders this process has opened: the agent's "how much are we re-encoding" figure.
    encoders_started: ClassVar[int] = 0

    def __init__(self, decoder: Any, *, fps: float, gop_seconds: float = 1.0,
                 bits_per_pixel: float = 0.1) -> None:
        self._decoder = decoder  # the input stream's codec context
        self._fps = fps if fps > 0 else 15.0
        self._gop_seconds = gop_seconds
        self._bits_per_pixel = bits_per_pixel
        self._encoder: Any = None
        self._frames = 0

    @property
    def started(self) -> bool:
        return self._encoder is not None

    def transcode(self, packet: av.Packet[Any]) -> list[EncodedUnit]:
        units: list[EncodedUnit] = []
        for frame in self._decoder.decode(packet):
            units += self._encode(frame)
        return units

    def _encode(self, frame: av.VideoFrame) -> list[EncodedUnit]:
        if self._encoder is None:
            self._encoder = self._open_encoder(frame.width, frame.height)
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        if frame.pts is not None and frame.time_base is not None:
            pts = round(frame.pts * frame.time_base / CLOCK)
        else:
            pts = round(self._frames / self._fps / CLOCK)
        self._frames += 1
        frame.pts, frame.time_base = pts, CLOCK
        frame.pict_type = av.video.frame.PictureType.NONE
        return [
            EncodedUnit(bytes(out), out.pts if out.pts is not None else pts, out.is_keyframe)
            for out in self._encoder.encode(frame)
        ]

    def _open_encoder(self, width: int, height: int) -> Any:
        encoder = av.CodecContext.create("libx264", "w")
        encoder.width, encoder.height = width, height
        encoder.pix_fmt = "yuv420p"
        encoder.time_base = CLOCK
        encoder.framerate = Fraction(self._fps).limit_denominator(1001)
        encoder.gop_size = max(1, round(self._fps * self._gop_seconds))
        encoder.bit_rate = int(width * height * self._fps * self._bits_per_pixel)
        encoder.options = {
            "preset": "ultrafast", "tune": "zerolatency", "profile": "baseline",
            # SPS/PPS before every key frame, and key frames exactly every GOP, as a camera does.
            "x264-params": "repeat-headers=1:scenecut=0",
        }
        encoder.thread_count = 1
        encoder.open()
        type(self).encoders_started += 1
        return encoder

    def close(self) -> None:
        self._encoder = None
