"""Incidents as they happen, timed end to end with the real parts.

* ``sos_to_first_frame``: a carrier's wearable platform (``simulators.wearables``) posts an SOS
  for a child near a pilot camera; the protection centre's console (headless Chromium, signed in
  as ``vulnerable-support``) gets it pushed, opens the incident by itself and shows the nearest
  cameras. One sample: the POST leaving the simulator → the first decoded frame in the console's
  first tile (both wall clock, same machine).
* ``move_to_new_camera_live``: a 112 room follows a fleeing suspect. The CAD feed moves the
  incident to a place whose nearest camera was out of reach; the room (an aiortc viewer) opens
  that camera. One sample: the Move call → the first decoded frame from the new camera.

Mosquitto, the core with its console, and both pilot agents (each its own process). Runs in a
loopback-only namespace (root):
``unshare --net sh -c 'ip link set lo up && exec .venv/bin/python bench/incidents.py'``.
Prints JSON: min / p50 / p95 / max (ms) for each, with the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from golden_time import CHROMIUM, CHROMIUM_ARGS, IDLE_CLOSE_SECONDS
from media_rig import summary
from playwright.async_api import Page, async_playwright

from cloud_core.config import CoreConfig
from cloud_core.server import CoreServer
from protos.safetynet.v1 import core_pb2, core_pb2_grpc
from runtime.logs import configure_logging
from runtime.mqtt_link import BrokerSettings
from runtime.webrtc import WebRtcSettings
from safetynet.broker import MosquittoBroker
from safetynet.demo import AgentProcess
from simulators.agent_configs import write_pilot_configs
from simulators.district_outlines import write_outlines_geojson
from simulators.pilot_districts import GANGNAM, MAPO, PILOT_DISTRICTS
from simulators.wearables import WearableSimConfig, WearableSimulator
from viewer.client import CameraViewer


async def sos_sample(page: Page, simulator: WearableSimulator, index: int,
                     place: tuple[float, float]) -> float:
    """One SOS at ``place``: POST → first frame in the console's first tile, in ms."""
    await page.evaluate("() => window.safetynet.app.navigate('#/map')")
    wearer = simulator.subjects[index]
    wearer.lat, wearer.lon = place
    sent = time.time() * 1000
    answer = await simulator.alert(wearer, "sos")
    await page.wait_for_function(
        "(id) => window.safetynet.app.view?.incidentId === id && "
        "window.safetynet.tiles().length > 0 && window.safetynet.tiles()[0].first_frame_epoch_ms",
        arg=answer["incident_id"], timeout=20_000)
    shown = await page.evaluate("() => window.safetynet.tiles()[0].first_frame_epoch_ms")
    return float(shown) - sent


async def move_sample(core: CoreServer, token: str, run: int) -> float:
    """A robbery at a Mapo camera, then the suspect at a Gangnam camera: Move → first frame."""
    start, end = MAPO.cameras[run % len(MAPO.cameras)], GANGNAM.cameras[run % len(GANGNAM.cameras)]
    metadata = (("authorization", f"Bearer {token}"),)
    report = core_pb2.ReportIncidentRequest(
        incident_type="robbery", location=core_pb2.GeoPoint(lat=start.lat, lon=start.lon))
    report.occurred_at.FromDatetime(datetime.now(UTC) - timedelta(minutes=15))
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = core_pb2_grpc.IncidentServiceStub(channel)
        opened = await stub.Report(report, metadata=metadata)
        move = core_pb2.MoveIncidentRequest(
            incident_id=opened.incident.incident_id, source="cad",
            location=core_pb2.GeoPoint(lat=end.lat, lon=end.lon))
        move.at.FromDatetime(datetime.now(UTC))
        started = time.perf_counter()
        moved = await stub.Move(move, metadata=metadata)
        viewer = CameraViewer(core.address, moved.cameras[0].camera_id,
                              webrtc=WebRtcSettings.loopback(), token=token,
                              incident_id=opened.incident.incident_id)
        await viewer.open()
        try:
            await asyncio.wait_for(viewer.first_frame.wait(), 20)
            elapsed = (time.perf_counter() - started) * 1000
        finally:
            await viewer.close()
        await stub.Close(core_pb2.CloseIncidentRequest(
            incident_id=opened.incident.incident_id, reason="bench run done"), metadata=metadata)
    return elapsed


async def run(args: argparse.Namespace) -> dict[str, object]:
    load_before = os.getloadavg()
    sos: list[float] = []
    moves: list[float] = []
    with tempfile.TemporaryDirectory(prefix="safetynet-incidents-") as tmp:
        state = Path(tmp)
        async with MosquittoBroker() as broker:
            config = CoreConfig(
                database=state / "core.sqlite3", listen="127.0.0.1:0", http_listen="127.0.0.1:0",
                broker=BrokerSettings(host=broker.host, port=broker.port),
                district_outlines_file=write_outlines_geojson(state / "districts.geojson"))
            async with CoreServer(config) as core:
                assert core.access is not None and core.console is not None
                policy = core.access.policy
                _, centre = core.access.operators.add("bench-centre", agency="vulnerable-support",
                                                      role="operator", policy=policy)
                _, feed = core.access.operators.add("bench-carrier", agency="vulnerable-support",
                                                    role="feed", policy=policy)
                _, police = core.access.operators.add("bench-police", agency="police-112",
                                                      role="operator", policy=policy)
                configs = write_pilot_configs(state / "agents", broker_host=broker.host,
                                              broker_port=broker.port, source=args.source,
                                              grant_public_key=config.grant_public_key_path,
                                              idle_close_seconds=IDLE_CLOSE_SECONDS)
                agents = [AgentProcess(p.stem, p, "warning") for p in configs]
                for agent in agents:
                    await agent.start()
                try:
                    expected = sum(len(d.cameras) for d in PILOT_DISTRICTS)
                    await core.wait_until(
                        lambda r: len(r.list_cameras(status="online")) >= expected, 30)
                    sos = await _sos_runs(core, centre, feed, args.runs)
                    for run_index in range(args.runs):
                        moves.append(await move_sample(core, police, run_index))
                        await asyncio.sleep(IDLE_CLOSE_SECONDS + 0.5)
                finally:
                    for agent in agents:
                        await agent.stop()
    return {
        "benchmark": "incidents",
        "runs": args.runs,
        "source": args.source,
        "sos_to_first_frame_ms": summary(sos),
        "move_to_new_camera_live_ms": summary(moves),
        "target_p95_ms": 1000,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "samples_ms": {"sos": [round(s, 1) for s in sos], "move": [round(m, 1) for m in moves]},
    }


async def _sos_runs(core: CoreServer, centre: str, feed: str, runs: int) -> list[float]:
    assert core.console is not None
    samples: list[float] = []
    places = [(c.lat, c.lon) for d in PILOT_DISTRICTS for c in d.cameras]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1600, "height": 900})
        await page.goto(core.console.url)
        await page.fill("#signin-token", centre)
        await page.click("#signin-form button[type=submit]")
        await page.wait_for_function("() => window.safetynet.app.events?.connected === true")
        await asyncio.sleep(1.0)  # the console's offer pool fills, as it would
        sim_config = WearableSimConfig(core_url=core.console.url, token=feed, subjects=runs,
                                       seed=11)
        async with WearableSimulator(sim_config) as simulator:
            for index in range(runs):
                samples.append(await sos_sample(page, simulator, index,
                                                places[(index * 7) % len(places)]))
                await asyncio.sleep(IDLE_CLOSE_SECONDS + 0.5)
        await browser.close()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--source", default="sim:?size=640x360&fps=15&gop=1",
                        help="camera source for every simulated camera (default: the demo's)")
    args = parser.parse_args()
    configure_logging("warning")
    result: dict[str, Any] = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
