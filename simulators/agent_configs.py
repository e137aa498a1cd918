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
                      sources: dict[str, str] | None = None,
                      grant_public_key: Path | None = None) -> str:
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
    if grant_public_key is not None:
        lines += ["[grants]", "# The core's grant-signing public key: offers without a valid grant are refused.",
                  f"public_key = {_toml_string(str(grant_public_key))}", ""]
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
                        advertise: Sequence[str] = (), grant_public_key: Path | None = None,
                        sources: dict[str, str] | None = None, **kwargs: float) -> list[Path]:
    if not source.startswith(("sim:", "rtsp://")):
        raise ValueError(f"--source must be sim:… or rtsp://…, got {source!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for district in PILOT_DISTRICTS:
        path = out_dir / f"{district.district_id}.toml"
        path.write_text(agent_config_text(district, broker_host=broker_host, broker_port=broker_port,
                                          source=source, advertise=tuple(advertise) or ("127.0.0.1",),
                                          grant_public_key=grant_public_key, sources=sources,
                                          **kwargs))
        written.append(path)
    return written


def read_camera_urls(text: str) -> dict[str, str]:
    """``CAMERA_ID URL`` lines, as ``safetynet sim cameras`` prints them, as a ``sources`` mapping.

    Blank lines and ``#`` comments are skipped; anything else that is not an id and an
    ``rtsp://`` URL is a ValueError naming the line.
    """
    sources: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 2 or not words[1].startswith(("rtsp://", "rtsps://")):
            raise ValueError(f"line {number}: want 'CAMERA_ID rtsp://…', got {line.strip()!r}")
        sources[words[0]] = words[1]
    return sources
