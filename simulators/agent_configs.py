"""Agent configuration files for simulated districts (the pilot two, for now)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from simulators.pilot_districts import PILOT_DISTRICTS, PilotDistrict


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def agent_config_text(district: PilotDistrict, *, broker_host: str, broker_port: int,
                      source: str, advertise: Sequence[str] = ("127.0.0.1",),
                      heartbeat_seconds: float = 30, idle_close_seconds: float = 10,
                      sources: dict[str, str] | None = None,
                      grant_public_key: Path | None = None,
                      broker_login: tuple[str, str] | None = None,
                      status_only_file: Path | None = None) -> str:
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
        *([f"username = {_toml_string(broker_login[0])}",
           f"password = {_toml_string(broker_login[1])}"] if broker_login else []),
        "",
        "[webrtc]",
        f"advertise = [{', '.join(_toml_string(a) for a in advertise)}]",
        "",
    ]
    if grant_public_key is not None:
        lines += ["[grants]", "# The core's grant-signing public key: offers without a valid grant are refused.",
                  f"public_key = {_toml_string(str(grant_public_key))}", ""]
    if status_only_file is not None:
        lines += ["[simulation]", "# Cameras reported in this agent's snapshot, never pulled.",
                  f"status_only_file = {_toml_string(str(status_only_file))}", ""]
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
                        sources: dict[str, str] | None = None,
                        broker_logins: dict[str, tuple[str, str]] | None = None,
                        heartbeat_seconds: float = 30, idle_close_seconds: float = 10) -> list[Path]:
    """One agent config per pilot district; with ``broker_logins`` (district -> user, password)
    each file carries its agent's broker password and is written 0600."""
    if not source.startswith(("sim:", "rtsp://")):
        raise ValueError(f"--source must be sim:… or rtsp://…, got {source!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for district in PILOT_DISTRICTS:
        path = out_dir / f"{district.district_id}.toml"
        login = (broker_logins or {}).get(district.district_id)
        text = agent_config_text(district, broker_host=broker_host, broker_port=broker_port,
                                 source=source, advertise=tuple(advertise) or ("127.0.0.1",),
                                 grant_public_key=grant_public_key, sources=sources,
                                 broker_login=login, heartbeat_seconds=heartbeat_seconds,
                                 idle_close_seconds=idle_close_seconds)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if login else 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            if login:
                os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
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
