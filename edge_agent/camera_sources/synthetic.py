"""``sim:`` sources: the simulators' drawn scene, encoded once per camera while watched.

URL form: ``sim:?size=640x360&fps=15&gop=1&kbps=800`` (every parameter optional).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from urllib.parse import parse_qs, urlsplit

from edge_agent.camera_sources.base import CameraSource, EncodedPacket
from edge_agent.camera_sources.synthetic_scene import SceneSettings, SyntheticCamera
from edge_agent.config import CameraConfig


def scene_settings_from_url(url: str) -> SceneSettings:
    """Parse a ``sim:`` URL's query; raise ValueError naming the bad parameter."""
    query = parse_qs(urlsplit(url).query, strict_parsing=False)
    unknown = set(query) - {"size", "fps", "gop", "kbps"}
    if unknown:
        raise ValueError(f"unknown sim: parameter(s) {', '.join(sorted(unknown))} in {url!r}")
    kwargs: dict[str, int | float] = {}
    try:
        if "size" in query:
            width, height = query["size"][0].lower().split("x")
            kwargs["width"], kwargs["height"] = int(width), int(height)
        if "fps" in query:
            kwargs["fps"] = int(query["fps"][0])
        if "gop" in query:
            kwargs["gop_seconds"] = float(query["gop"][0])
        if "kbps" in query:
            kwargs["bitrate_kbps"] = int(query["kbps"][0])
    except ValueError as exc:
        raise ValueError(f"bad sim: parameter in {url!r}: {exc}") from exc
    return SceneSettings(**kwargs)  # type: ignore[arg-type]


class SyntheticSource(CameraSource):
    kind = "simulated"
    codec = "h264"

    def __init__(self, camera: CameraConfig, district_id: str) -> None:
        self.camera_id = camera.camera_id
        self.opens = 0
        self._camera = SyntheticCamera(
            camera.camera_id, district_id, camera.name, scene_settings_from_url(camera.source)
        )

    async def packets(self) -> AsyncGenerator[EncodedPacket, None]:
        self.opens += 1
        async for packet in self._camera.packets():
            yield packet
