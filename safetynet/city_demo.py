"""``safetynet demo --city``: the whole city on one machine — 25 districts, 68,000 cameras.

Starts a Mosquitto broker on a free loopback port, the core (in this process) with the city's
district outlines, and every district of ``simulators/city.py``. Most cameras report status
only, from one status-only simulator process-wide (``simulators/district_status.py``): that is
what the core and the consoles see of a district. A few cameras per district (``real_per_
district``) are real RTSP streams from the camera simulator, served by that district's one
real edge agent, so an incident anywhere in the city opens real video. Ctrl-C stops agents,
simulator, core and broker in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from cloud_core.config import CoreConfig
from cloud_core.server import CoreServer
from runtime.mqtt_link import BrokerSettings
from safetynet.broker import MosquittoBroker
from safetynet.demo import AgentProcess, _core_port, _demo_operators
from simulators import city
from simulators.agent_configs import agent_config_text
from simulators.district_status import SimulatedDistrict, StatusOnlyDistricts
from simulators.facilities import write_facilities_csv
from simulators.pilot_districts import PilotCamera, PilotDistrict
from simulators.rtsp_launcher import RtspCameraServer, server_unavailable_reason

log = structlog.get_logger(__name__)

STARTUP_TIMEOUT = 120.0


@dataclass(frozen=True)
class CityDemoOptions:
    state_dir: Path | None = None
    core_port: int = 50051
    console_port: int = 8080
    cameras: int = city.CITY_CAMERAS
    real_per_district: int = 2        # real RTSP cameras (and one real agent) per district
    agent_log_level: str = "warning"


def _split(options: CityDemoOptions) -> tuple[list[PilotDistrict], list[SimulatedDistrict]]:
    """Each district's first cameras are real (agent + RTSP), the rest status only."""
    real, status_only = [], []
    for district in city.districts(options.cameras):
        cameras = city.district_cameras(district)
        live = cameras[:options.real_per_district]
        if live:
            real.append(PilotDistrict(district.district_id, district.name, tuple(
                PilotCamera(c.camera_id, c.name, c.lat, c.lon) for c in live)))
        status_only.append(SimulatedDistrict(district.district_id, district.name,
                                             cameras[len(live):], publish_agent=not live))
    return real, status_only


def _write_status_only(path: Path, district: SimulatedDistrict) -> Path:
    path.write_text(json.dumps([{"id": c.camera_id, "name": c.name, "lat": c.lat, "lon": c.lon}
                                for c in district.cameras]))
    return path


async def _rtsp(stack: contextlib.AsyncExitStack, camera_ids: list[str]) -> dict[str, str]:
    reason = server_unavailable_reason()
    if reason is not None or not camera_ids:
        if reason:
            print(f"safetynet demo --city: no RTSP camera simulator ({reason}); real cameras "
                  "draw synthetic scenes instead", file=sys.stderr)
        return {}
    server = await stack.enter_async_context(RtspCameraServer(
        camera_ids, size=(640, 360), fps=15, gop_s=1.0, bitrate_kbps=800))
    return dict(server.urls)


def _write_agents(out: Path, real: list[PilotDistrict], broker: MosquittoBroker,
                  core_config: CoreConfig, sources: dict[str, str],
                  status_only: dict[str, SimulatedDistrict]) -> list[Path]:
    """One config per real agent; the agent also reports its district's status-only cameras in
    its snapshot, so the district is one retained message, not 2,700 (docs/city-scale.md)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for district in real:
        path = out / f"{district.district_id}.toml"
        extra = status_only.get(district.district_id)
        path.write_text(agent_config_text(
            district, broker_host=broker.host, broker_port=broker.port,
            source="sim:?size=640x360&fps=15&gop=1", sources=sources,
            grant_public_key=core_config.grant_public_key_path,
            status_only_file=(_write_status_only(out / f"{district.district_id}-status-only.json",
                                                 extra) if extra else None)))
        paths.append(path)
    return paths


async def run_city_demo(options: CityDemoOptions, stop: asyncio.Event) -> int:
    with contextlib.ExitStack() as cleanup:
        state_dir = options.state_dir or Path(cleanup.enter_context(
            tempfile.TemporaryDirectory(prefix="safetynet-city-")))
        state_dir.mkdir(parents=True, exist_ok=True)
        async with MosquittoBroker(work_dir=state_dir) as broker:
            core_config = CoreConfig(
                database=state_dir / "core.sqlite3",
                listen=f"127.0.0.1:{_core_port(options.core_port)}",
                broker=BrokerSettings(host=broker.host, port=broker.port),
                facilities_file=write_facilities_csv(state_dir / "facilities.csv"),
                http_listen=f"127.0.0.1:{_core_port(options.console_port, 'console')}",
                district_outlines_file=city.write_outlines_geojson(state_dir / "districts.geojson"))
            async with CoreServer(core_config) as core, contextlib.AsyncExitStack() as stack:
                return await _run(options, stop, state_dir, broker, core, stack)
    return 0


async def _run(options: CityDemoOptions, stop: asyncio.Event, state_dir: Path,
               broker: MosquittoBroker, core: CoreServer, stack: contextlib.AsyncExitStack) -> int:
    real, status_only = _split(options)
    sources = await _rtsp(stack, [c.camera_id for d in real for c in d.cameras])
    with_agent = {d.district_id for d in real}
    configs = _write_agents(state_dir / "agents", real, broker, core.config, sources,
                            {d.district_id: d for d in status_only if d.district_id in with_agent})
    operators = _demo_operators(core, state_dir / "tokens")
    # Districts without a real agent (``real_per_district`` 0) are simulated whole.
    await stack.enter_async_context(StatusOnlyDistricts(
        BrokerSettings(host=broker.host, port=broker.port),
        [d for d in status_only if d.district_id not in with_agent]))
    agents = [AgentProcess(path.stem, path, options.agent_log_level) for path in configs]
    try:
        for agent in agents:
            await agent.start()
        total = sum(len(d.cameras) for d in real) + sum(len(d.cameras) for d in status_only)
        try:
            # A count per commit, not the 68,000 rows: the loop must stay free while they come.
            await core.wait_until(lambda r: r.cameras_by_state().get("online", 0) >= total,
                                  STARTUP_TIMEOUT)
        except TimeoutError:
            print(f"safetynet demo --city: not every camera online within {STARTUP_TIMEOUT:g} s",
                  file=sys.stderr)
            return 1
        state: dict[str, Any] = {
            "core": core.address, "console": core.console.url if core.console else None,
            "broker": f"mqtt://{broker.host}:{broker.port}", "cameras": total,
            "districts": len(status_only), "real_cameras": {d.district_id: [c.camera_id for c in d.cameras]
                                                            for d in real},
            "camera_source": "rtsp" if sources else "synthetic", "operators": operators,
        }
        (state_dir / "demo.json").write_text(json.dumps(state, indent=2) + "\n")
        print(f"\nSafety Net city demo (loopback only): {total} cameras in {len(status_only)} "
              f"districts, {len(agents)} real agents\n  console {state['console']}\n  core    "
              f"{state['core']}\n  tokens  {state_dir / 'tokens'}\nCtrl-C stops everything.",
              flush=True)
        await stop.wait()
        print("\nstopping: agents, districts, core, broker …", flush=True)
    finally:
        for agent in agents:
            await agent.stop()
    return 0
