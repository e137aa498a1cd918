"""Where a camera's H.264 comes from: the seam between the agent and its cameras.

``base.CameraSource`` is the interface; ``synthetic`` draws a scene (``sim:`` sources);
an RTSP source plugs in beside it. ``source_for()`` picks one from the inventory entry.
"""

from __future__ import annotations

from edge_agent.camera_sources.base import CameraSource, EncodedPacket
from edge_agent.camera_sources.synthetic import SyntheticSource
from edge_agent.config import CameraConfig


def source_for(camera: CameraConfig, district_id: str) -> CameraSource:
    """The source for one inventory entry (the URL scheme decides)."""
    scheme = camera.source.split(":", 1)[0]
    if scheme == "sim":
        return SyntheticSource(camera, district_id)
    raise ValueError(f"camera {camera.camera_id!r}: unsupported source scheme {scheme!r}")


__all__ = ["CameraSource", "EncodedPacket", "SyntheticSource", "source_for"]
