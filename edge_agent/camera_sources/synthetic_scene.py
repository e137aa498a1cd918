"""A synthetic camera: frames drawn with OpenCV, encoded to H.264 once, whoever watches.

The scene shows the camera id, its district, the wall clock and a moving object, so a viewer can
tell cameras apart and see that the picture is live. Frames are encoded by one libx264 encoder per
camera (zero-latency, baseline, fixed GOP), exactly what a real camera sends; viewers receive the
packets as they are.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

import av
import cv2
import numpy as np

from edge_agent.camera_sources.base import CLOCK_RATE, TIME_BASE, EncodedPacket


@dataclass(frozen=True)
class SceneSettings:
    width: int = 640
    height: int = 360
    fps: int = 15
    gop_seconds: float = 1.0
    bitrate_kbps: int = 800

    def __post_init__(self) -> None:
        if not (16 <= self.width <= 3840 and 16 <= self.height <= 2160):
            raise ValueError(f"size {self.width}x{self.height} is out of range (16x16 .. 3840x2160)")
        if self.width % 2 or self.height % 2:
            raise ValueError(f"size {self.width}x{self.height} must have even width and height")
        if not 1 <= self.fps <= 60:
            raise ValueError(f"fps {self.fps} is out of range (1 .. 60)")
        if not 0.1 <= self.gop_seconds <= 10:
            raise ValueError(f"gop {self.gop_seconds} s is out of range (0.1 .. 10)")
        if not 50 <= self.bitrate_kbps <= 20_000:
            raise ValueError(f"bitrate {self.bitrate_kbps} kb/s is out of range (50 .. 20000)")

    @property
    def gop_frames(self) -> int:
        return max(1, round(self.gop_seconds * self.fps))


class SceneRenderer:
    """Draws the synthetic picture for one camera."""

    def __init__(self, camera_id: str, district: str, name: str, settings: SceneSettings) -> None:
        self._settings = settings
        self._lines = (camera_id, f"{district} / {name}")
        seed = sum(camera_id.encode())
        rng = np.random.default_rng(seed)
        self._background = self._draw_background(rng)
        self._colour = tuple(int(c) for c in rng.integers(60, 255, size=3))

    def _draw_background(self, rng: np.random.Generator) -> np.ndarray:
        w, h = self._settings.width, self._settings.height
        image = np.zeros((h, w, 3), dtype=np.uint8)
        image[:] = (40, 45, 50)
        # A road and some buildings, different for every camera.
        cv2.rectangle(image, (0, h * 2 // 3), (w, h), (70, 70, 70), -1)
        for _ in range(6):
            x = int(rng.integers(0, w))
            bw, bh = int(rng.integers(w // 12, w // 5)), int(rng.integers(h // 5, h // 2))
            shade = int(rng.integers(60, 120))
            cv2.rectangle(image, (x, h * 2 // 3 - bh), (x + bw, h * 2 // 3), (shade, shade, shade + 10), -1)
        return image

    def render(self, t: float) -> np.ndarray:
        w, h = self._settings.width, self._settings.height
        image = self._background.copy()
        x = int((0.5 + 0.45 * math.sin(t * 0.9)) * w)
        y = int(h * 0.83)
        cv2.circle(image, (x, y), max(4, h // 14), self._colour, -1)
        scale = h / 360
        thickness = max(1, int(2 * scale))
        stamp = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-4]
        for i, text in enumerate((*self._lines, stamp)):
            cv2.putText(image, text, (int(12 * scale), int((32 + 30 * i) * scale)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale, (255, 255, 255), thickness, cv2.LINE_AA)
        return image


class FrameEncoder:
    """One libx264 encoder, emitting Annex B access units with SPS/PPS on every key frame."""

    def __init__(self, settings: SceneSettings) -> None:
        codec = av.CodecContext.create("libx264", "w")
        codec.width = settings.width
        codec.height = settings.height
        codec.pix_fmt = "yuv420p"
        codec.time_base = TIME_BASE
        codec.framerate = Fraction(settings.fps, 1)
        codec.bit_rate = settings.bitrate_kbps * 1000
        codec.gop_size = settings.gop_frames
        codec.profile = "Baseline"
        codec.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "x264-params": f"keyint={settings.gop_frames}:min-keyint={settings.gop_frames}:scenecut=0",
        }
        self._codec = codec

    def encode(self, image: np.ndarray, pts: int) -> list[EncodedPacket]:
        frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
        frame.pts = pts
        frame.time_base = TIME_BASE
        return [
            EncodedPacket(bytes(p), int(p.pts if p.pts is not None else pts), TIME_BASE, bool(p.is_keyframe))
            for p in self._codec.encode(frame)
        ]


class SyntheticCamera:
    """Produces a live H.264 stream for one camera while iterated; nothing while not."""

    encoders_started = 0  # across all instances: lets tests prove "one encoder per camera"

    def __init__(self, camera_id: str, district: str, name: str, settings: SceneSettings) -> None:
        self.camera_id = camera_id
        self.settings = settings
        self._renderer = SceneRenderer(camera_id, district, name, settings)

    async def packets(self) -> AsyncGenerator[EncodedPacket, None]:
        """Encode frames in real time, paced by the monotonic clock, off the event loop."""
        encoder = FrameEncoder(self.settings)
        SyntheticCamera.encoders_started += 1
        interval = 1.0 / self.settings.fps
        start = time.monotonic()
        index = 0
        while True:
            due = start + index * interval
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:
                # Fell far behind (suspended process, busy machine): skip ahead, keep the clock.
                index = int((time.monotonic() - start) / interval)
                due = start + index * interval
            t = due - start
            pts = round(t * CLOCK_RATE)
            image = self._renderer.render(t)
            for packet in await asyncio.to_thread(encoder.encode, image, pts):
                yield packet
            index += 1
