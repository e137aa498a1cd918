"""Fault scenarios shared by the fault suite (a few cycles) and ``bench/faults.py`` (many).

Each scenario starts the real parts it needs (Mosquitto, the core, agents in-process or as
processes, simulated RTSP cameras, aiortc viewers), breaks one of them ``cycles`` times, waits
on conditions with deadlines (never a fixed sleep), asserts what must hold after every cycle,
and returns its figures (counts and the worst times) as a plain dict.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import grpc

from cloud_core import audit as audit_log
from cloud_core.config import CoreConfig
from cloud_core.operators import OperatorStore
from cloud_core.policy import Policy
from cloud_core.registry import Registry
from cloud_core.server import CoreServer
from cloud_core.status_ingest import AGENT_OFFLINE
from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig, CameraConfig, RtspSettings
from protos import topics
from protos.safetynet.v1 import core_pb2, core_pb2_grpc, mqtt_pb2
from runtime.mqtt_link import BrokerSettings, MqttLink
from runtime.webrtc import WebRtcSettings
from safetynet.broker import MosquittoBroker, free_port
from simulators.agent_configs import agent_config_text
from simulators.facilities import write_facilities_csv
from simulators.pilot_districts import GANGNAM, PilotDistrict
from simulators.rtsp_launcher import Fault, RtspCameraServer
from viewer.client import CameraViewer

SMALL_SIM = "sim:?size=320x240&fps=15&gop=1&kbps=300"
CAMERA = GANGNAM.cameras[0].camera_id
ROBBERY_AT = core_pb2.GeoPoint(lat=37.4979, lon=127.0276)

#: The promises the scenarios check (seconds).
STATUS_CONVERGES_S = 15.0
AGENT_OFFLINE_S = 2.0
CAMERA_DETECT_S = 5.0
CAMERA_RESUME_S = 10.0


@dataclass
class Figures:
    """Counts and worst times of one scenario."""

    cycles: int = 0
    failures: int = 0
    times: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    keep_going: bool = False  # count a failed cycle and go on (the bench) instead of raising
    problems: list[str] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def cycle(self) -> AsyncIterator[None]:
        """One fault cycle: counted; a failed check fails the run, or is counted with keep_going."""
        try:
            yield
        except (AssertionError, TimeoutError) as exc:
            if not self.keep_going:
                raise
            self.failures += 1
            self.problems.append(f"cycle {self.cycles}: {type(exc).__name__}: {exc}"[:300])
        self.cycles += 1

    def time(self, name: str, seconds: float) -> None:
        self.times.setdefault(name, []).append(seconds)

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cycles": self.cycles, "failures": self.failures, **self.counts}
        if self.problems:
            out["problems"] = self.problems[:10]
        for name, values in sorted(self.times.items()):
            ordered = sorted(values)
            out[f"{name}_s"] = {"p50": round(ordered[len(ordered) // 2], 3),
                                "max": round(ordered[-1], 3)}
        return out


def _auth(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def core_config_for(folder: Path, broker: BrokerSettings, **overrides: Any) -> CoreConfig:
    config = CoreConfig(database=folder / "core.sqlite3", listen="127.0.0.1:0", broker=broker,
                        answer_timeout_seconds=5.0,
                        facilities_file=write_facilities_csv(folder / "facilities.csv"))
    return replace(config, **overrides)


def agent_config_for(core: CoreConfig, district: PilotDistrict = GANGNAM, cameras: int = 1,
                     **overrides: Any) -> AgentConfig:
    config = AgentConfig(
        district_id=district.district_id, district_name=district.name,
        agent_id=f"{district.district_id}-agent", broker=core.broker,
        webrtc=WebRtcSettings.loopback(),
        cameras=tuple(CameraConfig(c.camera_id, c.name, c.lat, c.lon, SMALL_SIM)
                      for c in district.cameras[:cameras]),
        heartbeat_seconds=30, idle_close_seconds=1.0,
        grant_public_key=core.grant_public_key_path)
    return replace(config, **overrides)


def camera_online(camera_id: str, since: datetime | None = None) -> Callable[[Registry], bool]:
    """The registry shows ``camera_id`` online, from a status received after ``since``."""
    def check(registry: Registry) -> bool:
        record = registry.camera(camera_id)
        if record is None or not record.agent_online or record.status != "online":
            return False
        if since is None:
            return True
        district = registry.district(record.district_id)
        return (district is not None and district.last_seen is not None
                and district.last_seen >= since and record.last_seen is not None
                and record.last_seen >= since)
    return check


def add_operator(core: CoreServer, name: str = "gangnam-op",
                 agency: str = "district:gangnam") -> str:
    assert core.access is not None
    return core.access.operators.add(name, agency=agency, role="operator",
                                     policy=core.access.policy)[1]


async def report_incident(channel: grpc.aio.Channel, token: str, ref: str) -> str:
    """One acknowledged incident report (an audit record); its id."""
    stub = core_pb2_grpc.IncidentServiceStub(channel)
    report = await stub.Report(core_pb2.ReportIncidentRequest(
        incident_type="robbery", external_ref=ref, location=ROBBERY_AT),
        metadata=_auth(token), timeout=5)
    return str(report.incident.incident_id)


def _offline_and_closed(registry: Registry, sessions: set[str]) -> bool:
    district = registry.district(GANGNAM.district_id)
    return (district is not None and not district.agent_online
            and all((registry.session(s) or {}).get("close_reason") for s in sessions))


def audited_incidents(audit_db: Path | str) -> set[str]:
    return {r.entry.incident_id or "" for r in audit_log.search(audit_db, action="incident.report",
                                                          limit=audit_log.MAX_SEARCH_LIMIT)}


def viewer_of(core: CoreServer, token: str, camera_id: str = CAMERA) -> CameraViewer:
    return CameraViewer(core.address, camera_id, webrtc=WebRtcSettings.loopback(), token=token)


# --- broker kill / restart during live video -------------------------------------------------

async def broker_cycles(folder: Path, cycles: int, *, keep_going: bool = False) -> dict[str, Any]:
    """Kill the broker ``cycles`` times while a viewer watches; after each return the statuses
    converge within 15 s, the video never stopped, and no session or audit record is lost."""
    figures = Figures(keep_going=keep_going)
    async with MosquittoBroker() as broker:
        settings = BrokerSettings(host=broker.host, port=broker.port, keepalive=5)
        config = core_config_for(folder, settings)
        async with CoreServer(config) as core, EdgeAgent(agent_config_for(config)) as agent:
            await core.wait_until(camera_online(CAMERA), 10)
            token = add_operator(core)
            police = add_operator(core, "police-op", "police-112")
            acknowledged: list[str] = []
            async with viewer_of(core, token) as viewer, \
                    grpc.aio.insecure_channel(core.address) as channel:
                await viewer.wait_frames(5, timeout=10)
                session_id = viewer.report.session_id
                for n in range(cycles):
                    async with figures.cycle():
                        frames = viewer.report.frames
                        await broker.stop(kill=True)
                        async with asyncio.timeout(10):
                            while agent.link.connected.is_set() or core.link.connected.is_set():
                                await asyncio.sleep(0.02)
                        # Video flows peer to peer: the broker's absence must not touch it.
                        await viewer.wait_frames(frames + 10, timeout=5)
                        # The core keeps deciding and auditing while the broker is away.
                        acknowledged.append(await report_incident(channel, police, f"broker-{n}"))
                        returned_wall, returned = datetime.now(UTC), time.monotonic()
                        await broker.start()
                        await core.wait_until(camera_online(CAMERA, since=returned_wall),
                                              STATUS_CONVERGES_S)
                        figures.time("status_converged", time.monotonic() - returned)
                        await viewer.wait_frames(viewer.report.frames + 5, timeout=5)
                        record = core.registry.session(session_id) if core.registry else None
                        assert record is not None and record["closed_at"] is None, record
                        assert session_id in agent.sessions
                figures.count("frames_decoded", viewer.report.frames)
                figures.count("agent_connections", agent.link.connections)
            assert core.audit is not None
            audit_db = core.audit.db_path
            missing = set(acknowledged) - audited_incidents(audit_db)
            assert not missing, f"audit records lost: {sorted(missing)}"
            closed = core.registry.session(session_id) if core.registry else None
            assert closed is not None and closed["close_reason"] == "closed by viewer", closed
    report = audit_log.verify(audit_db)
    assert report.ok, report.problem
    figures.count("audit_records", report.records)
    return figures.summary()


# --- agent SIGKILL -------------------------------------------------------------------------

async def _start_agent(config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "safetynet", "agent", "--config", str(config),
        "--log-level", "warning", stdin=asyncio.subprocess.DEVNULL)


async def _stop_process(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(15):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


async def agent_kill_cycles(folder: Path, cycles: int, *, keep_going: bool = False) -> dict[str, Any]:
    """SIGKILL a watched agent process ``cycles`` times: its district reads offline within 2 s
    (the broker's last will) and the registry closes its open sessions ("agent offline")."""
    figures = Figures(keep_going=keep_going)
    async with MosquittoBroker() as broker:
        settings = BrokerSettings(host=broker.host, port=broker.port, keepalive=5)
        config = core_config_for(folder, settings)
        async with CoreServer(config) as core:
            assert core.registry is not None
            registry = core.registry
            token = add_operator(core)
            agent_toml = folder / "gangnam.toml"
            agent_toml.write_text(agent_config_text(
                GANGNAM, broker_host=broker.host, broker_port=broker.port, source=SMALL_SIM,
                grant_public_key=config.grant_public_key_path))
            for _ in range(cycles):
                async with figures.cycle():
                    agent = await _start_agent(agent_toml)
                    try:
                        await core.wait_until(camera_online(CAMERA), 20)
                        viewers = [viewer_of(core, token, c.camera_id) for c in GANGNAM.cameras[:2]]
                        async with contextlib.AsyncExitStack() as stack:
                            for viewer in viewers:
                                await stack.enter_async_context(viewer)
                                await viewer.wait_frames(3, timeout=10)
                            sessions = {v.report.session_id for v in viewers}
                            assert sessions <= {str(r["session_id"]) for r in registry.open_sessions()}
                            killed = time.monotonic()
                            agent.send_signal(signal.SIGKILL)
                            await agent.wait()
                            # Offline, and its sessions ended (the core closes them right after
                            # the ingest has written the agent's last will).
                            await core.wait_until(functools.partial(_offline_and_closed,
                                                                    sessions=sessions),
                                                  AGENT_OFFLINE_S)
                            figures.time("district_offline", time.monotonic() - killed)
                            reasons = {s: (registry.session(s) or {}).get("close_reason")
                                       for s in sessions}
                            assert set(reasons.values()) == {AGENT_OFFLINE}, reasons
                            still_open = [r for r in registry.open_sessions()
                                          if r["district_id"] == GANGNAM.district_id]
                            assert not still_open, still_open
                            figures.count("sessions_closed", len(sessions))
                    finally:
                        await _stop_process(agent)
    return figures.summary()


# --- core SIGKILL mid-write --------------------------------------------------------------------

async def core_kill_cycles(folder: Path, cycles: int, *, keep_going: bool = False, records_per_cycle: int = 60, writers: int = 6) -> dict[str, Any]:
    """SIGKILL the core process ``cycles`` times while it writes; restart it on the same files.
    After every kill the audit chain verifies and every acknowledged record is in it."""
    figures = Figures(keep_going=keep_going)
    db, audit_db = folder / "core.sqlite3", folder / "audit.sqlite3"
    registry = Registry(db)
    _, token = OperatorStore(registry.db).add("police-op", agency="police-112", role="operator",
                                              policy=Policy.default())
    registry.close()
    acknowledged: list[str] = []
    async with MosquittoBroker() as broker:
        for n in range(cycles):
            async with figures.cycle():
                port = free_port()
                core = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "safetynet", "core", "--db", str(db),
                    "--listen", f"127.0.0.1:{port}", "--broker", f"127.0.0.1:{broker.port}",
                    "--log-level", "warning")
                goal = len(acknowledged) + records_per_cycle
                try:
                    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                        await asyncio.wait_for(channel.channel_ready(), 20)

                        async def writer(w: int, cycle: int = n,
                                         channel: grpc.aio.Channel = channel) -> None:
                            i = 0
                            while True:
                                try:
                                    incident = await report_incident(channel, token,
                                                                     f"crash-{cycle}-{w}-{i}")
                                except grpc.aio.AioRpcError:
                                    return
                                acknowledged.append(incident)
                                i += 1

                        tasks = [asyncio.create_task(writer(w)) for w in range(writers)]
                        async with asyncio.timeout(60):
                            while len(acknowledged) < goal:
                                if all(t.done() for t in tasks):
                                    raise AssertionError("every writer stopped before the kill")
                                await asyncio.sleep(0.005)
                        core.send_signal(signal.SIGKILL)
                        await core.wait()
                        await asyncio.gather(*tasks)
                finally:
                    if core.returncode is None:
                        core.kill()
                        await core.wait()
                report = audit_log.verify(audit_db)
                assert report.ok, f"cycle {n}: {report.problem}"
                missing = set(acknowledged) - audited_incidents(audit_db)
                assert not missing, f"cycle {n}: {len(missing)} acknowledged records lost"
                figures.count("kills")
        figures.count("acknowledged_records", len(acknowledged))
        figures.count("audit_records", audit_log.verify(audit_db).records)
    return figures.summary()


# --- camera faults -------------------------------------------------------------------------------

OFFLINE, ONLINE = mqtt_pb2.CAMERA_STATE_OFFLINE, mqtt_pb2.CAMERA_STATE_ONLINE


class StatusWatch:
    """Every CameraStatus the district publishes, with the time it arrived."""

    def __init__(self, broker: BrokerSettings, district: str) -> None:
        self.seen: list[tuple[float, mqtt_pb2.CameraStatus]] = []
        self._changed = asyncio.Condition()
        self._link = MqttLink(broker, client_id="fault-status-watch", on_message=self._on_message,
                              subscriptions=[topics.camera_changes(district)])

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[StatusWatch]:
        async with self._link:
            await self._link.wait_connected(5)
            yield self

    async def _on_message(self, message: aiomqtt.Message) -> None:
        assert isinstance(message.payload, bytes)
        changes = mqtt_pb2.CameraChanges.FromString(message.payload)
        async with self._changed:
            self.seen.extend((time.monotonic(), status) for status in changes.cameras)
            self._changed.notify_all()

    async def wait(self, camera_id: str, state: int, timeout: float, *, after: float) -> float:
        """When the first status of ``camera_id`` in ``state`` arrived after ``after``."""
        def found() -> float | None:
            return next((at for at, s in self.seen if at >= after
                         and s.camera.camera_id == camera_id and s.state == state), None)

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: found() is not None)
        at = found()
        assert at is not None
        return at


CAMERA_FAULTS = ("stall", "stop", "refuse")


async def camera_fault_cycles(folder: Path, cycles: int, *, keep_going: bool = False) -> dict[str, Any]:
    """Break a watched RTSP camera ``cycles`` times (stall, stop, refuse+stop in turn), then let
    it return: the agent reports it offline within 5 s, and the same viewer gets frames again
    within 10 s of its return."""
    figures = Figures(keep_going=keep_going)
    async with MosquittoBroker() as broker:
        settings = BrokerSettings(host=broker.host, port=broker.port, keepalive=5)
        config = core_config_for(folder, settings)
        async with RtspCameraServer([CAMERA], gop_s=1.0, fps=10, size=(320, 240),
                                    bitrate_kbps=300) as cameras:
            camera = GANGNAM.cameras[0]
            agent_config = replace(
                agent_config_for(config, cameras=0),
                cameras=(CameraConfig(camera.camera_id, camera.name, camera.lat, camera.lon,
                                      cameras.urls[CAMERA]),),
                rtsp=RtspSettings(open_timeout_seconds=2.0, stall_seconds=2.0))
            watch = StatusWatch(settings, GANGNAM.district_id)
            async with CoreServer(config) as core, EdgeAgent(agent_config) as agent, \
                    watch.running():
                await core.wait_until(camera_online(CAMERA), 10)
                token = add_operator(core)
                async with viewer_of(core, token) as viewer:
                    await viewer.wait_frames(5, timeout=10)
                    for n in range(cycles):
                        failures = figures.failures
                        async with figures.cycle():
                            fault = CAMERA_FAULTS[n % len(CAMERA_FAULTS)]
                            broken = time.monotonic()
                            if fault == "refuse":
                                await cameras.set_fault(CAMERA, Fault.REFUSE)
                                await cameras.set_fault(CAMERA, Fault.STOP)
                            else:
                                await cameras.set_fault(CAMERA, Fault(fault))
                            offline_at = await watch.wait(CAMERA, OFFLINE, CAMERA_DETECT_S,
                                                          after=broken)
                            figures.time(f"{fault}_detected", offline_at - broken)
                            frames = viewer.report.frames
                            await cameras.set_fault(CAMERA, Fault.RESUME)
                            returned = time.monotonic()
                            await viewer.wait_frames(frames + 3, timeout=CAMERA_RESUME_S)
                            figures.time(f"{fault}_resumed", time.monotonic() - returned)
                            await watch.wait(CAMERA, ONLINE, CAMERA_RESUME_S, after=offline_at)
                            assert viewer.report.session_id in agent.sessions
                            figures.count(fault)
                        if figures.failures > failures:  # counted: give the next cycle a camera
                            await cameras.set_fault(CAMERA, Fault.RESUME)
                    figures.count("source_opens", agent.feeds[CAMERA].source.opens)
    return figures.summary()
