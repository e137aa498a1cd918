"""The agent's configuration: one TOML file, read once, into frozen dataclasses.

    [district]
    id = "gangnam"
    name = "Gangnam-gu"

    [agent]                       # all optional
    id = "gangnam-agent"
    heartbeat_seconds = 30
    idle_close_seconds = 10       # keep a camera open this long after its last viewer leaves
    session_max_seconds = 3600    # hard cap on any session, whatever its grant says

    [broker]
    host = "127.0.0.1"
    port = 1883                   # TLS when ca_file is set: ca_file, cert_file, key_file

    [webrtc]
    advertise = ["127.0.0.1"]     # ICE host candidates; empty = every interface
    # [[webrtc.ice_servers]] urls = ["stun:stun.example.org"]

    [[cameras]]
    id = "gangnam-001"
    name = "Gangnam Station exit 11"
    lat = 37.49795
    lon = 127.02760
    source = "sim:?size=640x360&fps=15&gop=1"   # or rtsp://…
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.exceptions import ConfigError
from protos.topics import check_id
from safetynet.mqtt_link import BrokerSettings
from safetynet.webrtc import WebRtcSettings


@dataclass(frozen=True)
class CameraConfig:
    camera_id: str
    name: str
    lat: float
    lon: float
    source: str = field(repr=False)  # may carry credentials: never logged, never published

    @property
    def kind(self) -> str:
        return "simulated" if self.source.startswith("sim:") else self.source.split(":", 1)[0]


@dataclass(frozen=True)
class AgentConfig:
    district_id: str
    district_name: str
    agent_id: str
    broker: BrokerSettings
    webrtc: WebRtcSettings
    cameras: tuple[CameraConfig, ...]
    heartbeat_seconds: float = 30.0
    idle_close_seconds: float = 10.0
    session_max_seconds: float = 3600.0
    grant_public_key: Path | None = None

    def camera(self, camera_id: str) -> CameraConfig | None:
        return next((c for c in self.cameras if c.camera_id == camera_id), None)

    @classmethod
    def from_toml(cls, path: Path) -> AgentConfig:
        """Read and validate ``path``; every problem is a ConfigError naming the file and key."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(str(path), "file not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
        try:
            return cls.from_mapping(data, base=path.parent)
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(str(path), str(exc)) from exc

    @classmethod
    def from_mapping(cls, data: dict[str, Any], base: Path) -> AgentConfig:
        unknown = set(data) - {"district", "agent", "broker", "webrtc", "cameras", "grants"}
        if unknown:
            raise ValueError(f"unknown section(s): {', '.join(sorted(unknown))}")
        district = _table(data, "district")
        district_id = check_id(_str(district, "district.id"), "district.id")
        agent = _table(data, "agent", required=False)
        cameras = tuple(
            _camera(entry, i) for i, entry in enumerate(data.get("cameras", []), start=1)
        )
        seen: set[str] = set()
        for camera in cameras:
            if camera.camera_id in seen:
                raise ValueError(f"cameras: duplicate camera id {camera.camera_id!r}")
            seen.add(camera.camera_id)
        grants = _table(data, "grants", required=False)
        public_key = grants.get("public_key")
        return cls(
            district_id=district_id,
            district_name=str(district.get("name", district_id)),
            agent_id=str(agent.get("id", f"{district_id}-agent")),
            broker=BrokerSettings.from_mapping(_table(data, "broker", required=False), base),
            webrtc=WebRtcSettings.from_mapping(_table(data, "webrtc", required=False)),
            cameras=cameras,
            heartbeat_seconds=_positive(agent, "heartbeat_seconds", 30.0),
            idle_close_seconds=_positive(agent, "idle_close_seconds", 10.0, allow_zero=True),
            session_max_seconds=_positive(agent, "session_max_seconds", 3600.0),
            grant_public_key=(base / public_key).resolve() if public_key else None,
        )


def _table(data: dict[str, Any], key: str, *, required: bool = True) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        if required:
            raise ValueError(f"missing [{key}] section")
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"[{key}] must be a table")
    return value


def _str(table: dict[str, Any], dotted: str) -> str:
    value = table.get(dotted.rsplit(".", 1)[-1])
    if not isinstance(value, str) or not value:
        raise ValueError(f"{dotted} must be a non-empty string")
    return value


def _positive(table: dict[str, Any], key: str, default: float, *, allow_zero: bool = False) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"agent.{key} must be a number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"agent.{key} must be positive, got {value!r}")
    return float(value)


def _camera(entry: Any, index: int) -> CameraConfig:
    where = f"cameras[{index}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a table")
    unknown = set(entry) - {"id", "name", "lat", "lon", "source"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    camera_id = check_id(_str(entry, f"{where}.id"), f"{where}.id")
    lat, lon = entry.get("lat"), entry.get("lon")
    for name, value, bound in (("lat", lat, 90), ("lon", lon, 180)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{where} ({camera_id}): {name} must be a number, got {value!r}")
        if abs(value) > bound:
            raise ValueError(f"{where} ({camera_id}): {name} {value} is out of range ±{bound}")
    source = _str(entry, f"{where}.source")
    if not source.startswith(("sim:", "rtsp://", "rtsps://")):
        raise ValueError(f"{where} ({camera_id}): source must be sim:… or rtsp://…")
    return CameraConfig(camera_id, str(entry.get("name", camera_id)), float(lat), float(lon), source)  # type: ignore[arg-type]
