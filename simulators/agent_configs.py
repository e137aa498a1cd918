"""Agent configuration files for simulated districts (the pilot two, for now)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from simulators.pilot_districts import PILOT_DISTRICTS, PilotDistrict


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def agent_config_text(district: PilotDistrict, *, broker_host: str, broker_port: int,
                      source: str, advertise: Sequence[str] = ("127.0.0.1",),
                      heartbeat_seconds: float = 30, idle_close_seconds: float = 10,
                      sources: dict[str, str] | None = None) -> str:
    """The TOML an agent of ``district`` reads; ``sources`` overrides the source per camera."""
    lines = [
        "# Edge agent of a simulated district (written by safetynet sim districts).",
        "[district]",
        f"id = {_toml_string(district.district_id)}",
        f"name = {_toml_string(district.name)}",
        "",
        "[agent]",
        f"id = {_toml_string(district.district_id + '-agent')}",
        f"heartbeat_seconds = {heartbeat_seconds}",
        f"idle_close_seconds = {idle_close_seconds}",
        "",
        "[broker]",
        f"host = {_toml_string(broker_host)}",
        f"port = {broker_port}",
        "",
        "[webrtc]",
        f"advertise = [{', '.join(_toml_string(a) for a in advertise)}]",
        "",
    ]
    for camera in district.cameras:
        camera_source = (sources or {}).get(camera.camera_id, source)
        lines += [
            "[[cameras]]",
            f"id = {_toml_string(camera.camera_id)}",
            f"name = {_toml_string(camera.name)}",
            f"lat = {camera.lat}",
            f"lon = {camera.lon}",
            f"source = {_toml_string(camera_source)}",
            "",
        ]
    return "\n".join(lines)


def write_pilot_configs(out_dir: Path, *, broker_host: str, broker_port: int, source: str,
                        advertise: Sequence[str] = (), **kwargs: float) -> list[Path]:
    if not source.startswith(("sim:", "rtsp://")):
        raise ValueError(f"--source must be sim:… or rtsp://…, got {source!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for district in PILOT_DISTRICTS:
        path = out_dir / f"{district.district_id}.toml"
        path.write_text(agent_config_text(district, broker_host=broker_host, broker_port=broker_port,
                                          source=source, advertise=tuple(advertise) or ("127.0.0.1",),
                                          **kwargs))  # type: ignore[arg-type]
        written.append(path)
    return written
