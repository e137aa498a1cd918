"""The agent's configuration: one TOML file, read once, into frozen dataclasses.

    [district]
    id = "gangnam"
    name = "Gangnam-gu"

    [agent]                       # all optional
    id = "gangnam-agent"
    heartbeat_seconds = 30
    idle_close_seconds = 10       # keep a camera open this long after its last viewer leaves
    session_max_seconds = 259200  # hard cap on any session (72 h), whatever its grant says
    max_sessions = 256            # viewer slots; when full an incident preempts a standing view
    uplink_streams = 8            # the district uplink's budget: direct viewer streams at most
                                  # (the cloud relay's one pull per camera is on top; 0 = no limit)

    [broker]
    host = "127.0.0.1"
    port = 1883                   # TLS when ca_file is set: ca_file, cert_file, key_file
    # hosts = ["mqtt1:8883", "mqtt2:8883", "mqtt3:8883"]  # a broker cluster, tried in turn
    # connect_timeout = 5         # seconds per attempt on one node (docs/scale-out.md)
    # standby = true              # with hosts: a 2nd connection for signalling on another node

    [webrtc]
    advertise = ["127.0.0.1"]     # ICE host candidates; empty = every interface
    # [[webrtc.ice_servers]] urls = ["stun:stun.example.org"]

    [rtsp]                        # all optional: how RTSP cameras are pulled and probed
    open_timeout_seconds = 5      # connect + DESCRIBE/SETUP/PLAY, and a probe's whole exchange
    stall_seconds = 4             # no packet for this long: the camera is offline (stalled)
    probe_interval_seconds = 120  # each idle camera is probed (RTSP DESCRIBE) this often …
    probes_per_second = 25        # … but never faster than this for the whole district
    probe_concurrency = 16        # probes in flight at once

    [metrics]                     # optional: Prometheus /metrics on 127.0.0.1 (off without it)
    port = 9464                   # 0 picks a free port

    [core]                        # optional; only `safetynet agent check` uses it
    address = "core.city.example:50051"
    ca_file = "tls/ca.crt"        # the city CA: the core's gRPC is checked over TLS when set

    [[cameras]]                   # or, before any table: cameras_file = "cameras.csv"
    id = "gangnam-001"
    name = "Gangnam Station exit 11"
    lat = 37.49795
    lon = 127.02760
    source = "sim:?size=640x360&fps=15&gop=1"   # or rtsp://user:pass@host/path
    transport = "tcp"             # rtsp:// only: "tcp" (interleaved, default) or "udp"
    transcode = false             # rtsp:// only: re-encode to H.264 if the camera sends another codec
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge_agent.evidence_settings import EvidenceSettings
from edge_agent.exceptions import ConfigError
from edge_agent.local_settings import LocalSettings
from protos.topics import check_id
from runtime.mqtt_link import BrokerSettings
from runtime.webrtc import WebRtcSettings

DEFAULT_MAX_SESSIONS = 256
"""Viewer slots of one agent (``[agent] max_sessions``); when all are taken an incident session
preempts a standing-access one (the core decides which: ``cloud_core.session_capacity``)."""
MAX_MAX_SESSIONS = 4096


@dataclass(frozen=True)
class CameraConfig:
    camera_id: str
    name: str
    lat: float
    lon: float
    source: str = field(repr=False)  # may carry credentials: never logged, never published
    transport: str = "tcp"           # RTSP lower transport: "tcp" or "udp"
    transcode: bool = False          # allow re-encoding a codec that cannot be passed through

    @property
    def kind(self) -> str:
        return "simulated" if self.source.startswith("sim:") else self.source.split(":", 1)[0]


@dataclass(frozen=True)
class RtspSettings:
    """How the agent pulls and probes its RTSP cameras (``[rtsp]``)."""

    open_timeout_seconds: float = 5.0
    stall_seconds: float = 4.0
    probe_interval_seconds: float = 120.0
    probes_per_second: float = 25.0
    probe_concurrency: int = 16

    @classmethod
    def from_mapping(cls, table: dict[str, Any]) -> RtspSettings:
        unknown = set(table) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"rtsp: unknown key(s) {', '.join(sorted(unknown))}")
        concurrency = table.get("probe_concurrency", 16)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"rtsp.probe_concurrency must be a whole number ≥ 1, got {concurrency!r}")
        settings = cls(
            open_timeout_seconds=_positive(table, "open_timeout_seconds", 5.0, section="rtsp"),
            stall_seconds=_positive(table, "stall_seconds", 4.0, section="rtsp"),
            probe_interval_seconds=_positive(table, "probe_interval_seconds", 120.0, section="rtsp"),
            probes_per_second=_positive(table, "probes_per_second", 25.0, section="rtsp"),
            probe_concurrency=concurrency,
        )
        if settings.stall_seconds > 4.5:
            # Health promise: a camera whose frames stop is reported offline within 5 s.
            raise ValueError(f"rtsp.stall_seconds must be at most 4.5, got {settings.stall_seconds!r}")
        return settings


@dataclass(frozen=True)
class AgentConfig:
    district_id: str
    district_name: str
    agent_id: str
    broker: BrokerSettings
    webrtc: WebRtcSettings
    cameras: tuple[CameraConfig, ...]
    #: Simulation only (``[simulation] status_only_file``): cameras this agent reports in its
    #: snapshot as online and never pulls or serves, so one real agent can stand for a whole
    #: city-scale district on a small machine (``safetynet demo --city``).
    status_only: tuple[StatusOnlyCamera, ...] = ()
    heartbeat_seconds: float = 30.0
    idle_close_seconds: float = 10.0
    session_max_seconds: float = 259200.0
    max_sessions: int = DEFAULT_MAX_SESSIONS
    uplink_streams: int = 8  # direct streams this agent sends at most (0: no limit); docs/cloud-relay.md
    grant_public_key: Path | None = None
    rtsp: RtspSettings = field(default_factory=RtspSettings)
    core_address: str | None = None
    core_ca_file: Path | None = None
    audit_witness_file: Path | None = None  # where the audit checkpoints seen are kept
    evidence: EvidenceSettings | None = None  # [evidence]: docs/evidence.md
    local: LocalSettings | None = None        # [local]: docs/local-mode.md
    metrics_port: int | None = None  # Prometheus /metrics on loopback; None: not served

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
        unknown = set(data) - {"district", "agent", "broker", "webrtc", "cameras", "grants", "rtsp",
                               "cameras_file", "core", "audit", "evidence", "local",
                               "metrics", "simulation"}
        if unknown:
            raise ValueError(f"unknown section(s): {', '.join(sorted(unknown))}")
        district = _table(data, "district")
        district_id = check_id(_str(district, "district.id"), "district.id")
        agent = _table(data, "agent", required=False)
        cameras = tuple(
            _camera(entry, i) for i, entry in enumerate(data.get("cameras", []), start=1)
        )
        if "cameras_file" in data:
            if cameras:
                raise ValueError("give the cameras inline ([[cameras]]) or as cameras_file, not both")
            cameras = _cameras_from_file(base, data["cameras_file"])
        status_only = _status_only(base, _table(data, "simulation", required=False))
        seen: set[str] = set()
        for camera_id in [c.camera_id for c in cameras] + [c.camera_id for c in status_only]:
            if camera_id in seen:
                raise ValueError(f"cameras: duplicate camera id {camera_id!r}")
            seen.add(camera_id)
        grants = _table(data, "grants", required=False)
        public_key = grants.get("public_key")
        core = _table(data, "core", required=False)
        if set(core) - {"address", "ca_file"}:
            raise ValueError(f"core: unknown key(s) {', '.join(sorted(set(core) - {'address', 'ca_file'}))}")
        audit = _table(data, "audit", required=False)
        if set(audit) - {"witness_file"}:
            raise ValueError(f"audit: unknown key(s) {', '.join(sorted(set(audit) - {'witness_file'}))}")
        witness = audit.get("witness_file", "audit-witness.jsonl")
        if not isinstance(witness, str) or not witness:
            raise ValueError("audit.witness_file must be a file path")
        return cls(
            audit_witness_file=(base / witness).resolve(),
            district_id=district_id,
            district_name=str(district.get("name", district_id)),
            agent_id=str(agent.get("id", f"{district_id}-agent")),
            broker=BrokerSettings.from_mapping(_table(data, "broker", required=False), base),
            webrtc=WebRtcSettings.from_mapping(_table(data, "webrtc", required=False)),
            cameras=cameras,
            status_only=status_only,
            heartbeat_seconds=_positive(agent, "heartbeat_seconds", 30.0),
            idle_close_seconds=_positive(agent, "idle_close_seconds", 10.0, allow_zero=True),
            session_max_seconds=_positive(agent, "session_max_seconds", 259200.0),
            max_sessions=_max_sessions(agent),
            uplink_streams=_count(agent, "uplink_streams", 8),
            grant_public_key=(base / public_key).resolve() if public_key else None,
            rtsp=RtspSettings.from_mapping(_table(data, "rtsp", required=False)),
            core_address=_str(core, "core.address") if "address" in core else None,
            core_ca_file=(base / _str(core, "core.ca_file")).resolve() if "ca_file" in core else None,
            evidence=(EvidenceSettings.from_mapping(_table(data, "evidence"), base)
                      if "evidence" in data else None),
            local=(LocalSettings.from_mapping(_table(data, "local"), base)
                   if "local" in data else None),
            metrics_port=_metrics_port(_table(data, "metrics", required=False)),
        )


def _metrics_port(table: dict[str, Any]) -> int | None:
    if set(table) - {"port"}:
        raise ValueError(f"metrics: unknown key(s) {', '.join(sorted(set(table) - {'port'}))}")
    if "port" not in table:
        return None
    port = table["port"]
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"metrics.port must be a port number 0-65535, got {port!r}")
    return port


def _table(data: dict[str, Any], key: str, *, required: bool = True) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        if required:
            raise ValueError(f"missing [{key}] section")
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"[{key}] must be a table")
    return value


def _str(table: dict[str, Any], dotted: str) -> str:
    value = table.get(dotted.rsplit(".", 1)[-1])
    if not isinstance(value, str) or not value:
        raise ValueError(f"{dotted} must be a non-empty string")
    return value


def _max_sessions(agent: dict[str, Any]) -> int:
    value = agent.get("max_sessions", DEFAULT_MAX_SESSIONS)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"agent.max_sessions must be an integer, got {value!r}")
    if not 1 <= value <= MAX_MAX_SESSIONS:
        raise ValueError(f"agent.max_sessions must be 1..{MAX_MAX_SESSIONS}, got {value!r}")
    return value


def _count(table: dict[str, Any], key: str, default: int, section: str = "agent") -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{section}.{key} must be a whole number, 0 or more, got {value!r}")
    return value


def _positive(table: dict[str, Any], key: str, default: float, *, allow_zero: bool = False,
              section: str = "agent") -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{section}.{key} must be a number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{section}.{key} must be positive, got {value!r}")
    return float(value)


def _camera(entry: Any, index: int) -> CameraConfig:
    where = f"cameras[{index}]"
    if not isinstance(entry, dict):
        raise TypeError(f"{where} must be a table")
    unknown = set(entry) - {"id", "name", "lat", "lon", "source", "transport", "transcode"}
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
    is_rtsp = source.startswith(("rtsp://", "rtsps://"))
    if is_rtsp and not _has_host(source):
        raise ValueError(f"{where} ({camera_id}): source names no camera host (or a bad port)")
    transport = entry.get("transport", "tcp")
    if transport not in ("tcp", "udp"):
        raise ValueError(f"{where} ({camera_id}): transport must be \"tcp\" or \"udp\", got {transport!r}")
    transcode = entry.get("transcode", False)
    if not isinstance(transcode, bool):
        raise TypeError(f"{where} ({camera_id}): transcode must be true or false, got {transcode!r}")
    if not is_rtsp and ("transport" in entry or transcode):
        raise ValueError(f"{where} ({camera_id}): transport and transcode apply to rtsp:// sources only")
    return CameraConfig(camera_id, str(entry.get("name", camera_id)), float(lat), float(lon),  # type: ignore[arg-type]
                        source, transport=transport, transcode=transcode)


@dataclass(frozen=True)
class StatusOnlyCamera:
    camera_id: str
    name: str
    lat: float
    lon: float


MAX_STATUS_ONLY = 10_000  # as many as a heartbeat may carry


def _status_only(base: Path, table: dict[str, Any]) -> tuple[StatusOnlyCamera, ...]:
    """``[simulation] status_only_file``: a JSON list of {id, name, lat, lon}."""
    if set(table) - {"status_only_file"}:
        raise ValueError(f"simulation: unknown key(s) {', '.join(sorted(set(table) - {'status_only_file'}))}")
    if "status_only_file" not in table:
        return ()
    value = table["status_only_file"]
    if not isinstance(value, str) or not value:
        raise ValueError("simulation.status_only_file must be a file path")
    path = (base / value).resolve()
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"simulation.status_only_file {path}: {exc}") from exc
    if not isinstance(entries, list) or len(entries) > MAX_STATUS_ONLY:
        raise ValueError(f"simulation.status_only_file {path}: a list of at most "
                         f"{MAX_STATUS_ONLY} cameras expected")
    cameras = []
    for index, entry in enumerate(entries, start=1):
        where = f"simulation.status_only_file {path.name}[{index}]"
        if not isinstance(entry, dict) or set(entry) != {"id", "name", "lat", "lon"}:
            raise ValueError(f"{where}: an object with id, name, lat and lon expected")
        lat, lon = entry["lat"], entry["lon"]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                   for v in (lat, lon)) or abs(lat) > 90 or abs(lon) > 180:
            raise ValueError(f"{where}: impossible position ({lat!r}, {lon!r})")
        if not isinstance(entry["name"], str) or len(entry["name"]) > 200:
            raise ValueError(f"{where}: name must be text of at most 200 characters")
        cameras.append(StatusOnlyCamera(check_id(str(entry["id"]), f"{where}.id"),
                                        entry["name"], float(lat), float(lon)))
    return tuple(cameras)


def _cameras_from_file(base: Path, value: Any) -> tuple[CameraConfig, ...]:
    """The cameras of a CSV inventory (format: runtime/camera_inventory.py)."""
    from runtime.camera_inventory import read_inventory

    if not isinstance(value, str) or not value:
        raise ValueError("cameras_file must be a file path")
    path = (base / value).resolve()
    report = read_inventory(path)
    if not report.ok:
        shown = "; ".join(str(p) for p in report.problems[:5])
        more = f" (and {len(report.problems) - 5} more)" if len(report.problems) > 5 else ""
        raise ValueError(f"cameras_file {path}: {shown}{more}")
    return tuple(CameraConfig(c.camera_id, c.name, c.lat, c.lon, c.stream_url)
                 for c in report.cameras)


def _has_host(url: str) -> bool:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a malformed port
        return bool(parts.hostname)
    except ValueError:  # the message would quote the URL, password and all: ours does not
        return False
