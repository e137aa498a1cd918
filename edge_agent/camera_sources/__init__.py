"""Where a camera's H.264 comes from: the seam between the agent and its cameras.

``base.CameraSource`` is the interface; ``synthetic`` draws a scene (``sim:`` sources, the fake beside the real one, drawn by
``synthetic_scene``);
``rtsp`` pulls a real camera (``rtsp://`` and ``rtsps://``). ``source_for()`` picks one from
the inventory entry.
"""

from __future__ import annotations

from edge_agent.camera_sources.base import CameraSource, EncodedPacket
from edge_agent.camera_sources.rtsp import RtspSource
from edge_agent.config import CameraConfig, RtspSettings


def source_for(camera: CameraConfig, district_id: str,
               rtsp: RtspSettings | None = None) -> CameraSource:
    """The source for one inventory entry (the URL scheme decides)."""
    scheme = camera.source.split(":", 1)[0]
    if scheme == "sim":
        # Imported here: only a simulated camera needs OpenCV and numpy.
        from edge_agent.camera_sources.synthetic import SyntheticSource

        return SyntheticSource(camera, district_id)
    if scheme in ("rtsp", "rtsps"):
        return RtspSource(camera, rtsp)
    raise ValueError(f"camera {camera.camera_id!r}: unsupported source scheme {scheme!r}")


__all__ = ["CameraSource", "EncodedPacket", "RtspSource", "source_for"]
