"""Time from "preserve" to the clip's first frame on the agent's disk, for an idle camera (the
agent must first pull it over RTSP) and for a watched one (the pre-roll is written at once).

Everything real and in one process but the camera: a simulated RTSP camera (720p, 15 fps,
2.5 Mb/s, 1 s GOP by default), Mosquitto, the core's gRPC, the edge agent. Each run is a
Preserve RPC by a police operator under an open incident; the time is measured at the agent
(the recorder notes when its first frame is in a segment file). Prints min / p50 / max (ms) and
the load average as JSON.

    python bench/evidence.py [--runs 8] [--size 1280x720] [--fps 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from media_rig import summary

from cloud_core.config import CoreConfig
from cloud_core.server import CoreServer
from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig, CameraConfig
from edge_agent.evidence_settings import EvidenceSettings
from protos.safetynet.v1 import core_pb2, core_pb2_grpc
from runtime.logs import configure_logging
from runtime.mqtt_link import BrokerSettings
from runtime.webrtc import WebRtcSettings
from safetynet.broker import MosquittoBroker
from simulators.pilot_districts import GANGNAM
from simulators.rtsp_launcher import RtspCameraServer
from viewer.client import CameraViewer

CAMERA = GANGNAM.cameras[0]


async def one_run(core: CoreServer, agent: EdgeAgent, stub: Any, token: str,
                  incident: str) -> float:
    metadata = (("authorization", f"Bearer {token}"),)
    asked = time.monotonic()
    response = await stub.Preserve(core_pb2.PreserveEvidenceRequest(
        incident_id=incident, camera_ids=[CAMERA.camera_id], max_seconds=2), metadata=metadata)
    clip_id = response.clips[0].clip_id
    assert agent.evidence is not None
    recorder = agent.evidence.recorders[clip_id]
    await recorder.done
    assert recorder.first_segment_at is not None
    await core.wait_until(lambda _: core.evidence.clip(clip_id).state == "sealed", 10)  # type: ignore[union-attr]
    return (recorder.first_segment_at - asked) * 1000


async def run(args: argparse.Namespace) -> dict[str, Any]:
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="safetynet-bench-") as tmp:
        state = Path(tmp)
        cameras = RtspCameraServer([CAMERA.camera_id], gop_s=1.0, fps=args.fps,
                                   size=(width, height), bitrate_kbps=2500)
        await cameras.start()
        try:
            async with MosquittoBroker(work_dir=state) as broker:
                settings = BrokerSettings(host=broker.host, port=broker.port)
                core_config = CoreConfig(database=state / "core.sqlite3", listen="127.0.0.1:0",
                                         broker=settings)
                async with CoreServer(core_config) as core:
                    return await measure(core, cameras, settings, core_config, state, args)
        finally:
            await cameras.close()


async def measure(core: CoreServer, cameras: RtspCameraServer, broker: BrokerSettings,
                  core_config: CoreConfig, state: Path, args: argparse.Namespace) -> dict[str, Any]:
    assert core.access is not None
    _, police = core.access.operators.add("bench-police", agency="police-112", role="operator",
                                          policy=core.access.policy)
    _, district = core.access.operators.add("bench-district", agency="district:gangnam",
                                            role="operator", policy=core.access.policy)
    config = AgentConfig(
        district_id=GANGNAM.district_id, district_name=GANGNAM.name, agent_id="gangnam-agent",
        broker=broker, webrtc=WebRtcSettings.loopback(),
        cameras=(CameraConfig(CAMERA.camera_id, CAMERA.name, CAMERA.lat, CAMERA.lon,
                              cameras.urls[CAMERA.camera_id]),),
        idle_close_seconds=0.5, grant_public_key=core_config.grant_public_key_path,
        evidence=EvidenceSettings(directory=state / "evidence", key_file=state / "agent.key",
                                  segment_seconds=1.0))
    results: dict[str, Any] = {}
    async with EdgeAgent(config) as agent, grpc.aio.insecure_channel(core.address) as channel:
        await core.wait_until(lambda r: (c := r.camera(CAMERA.camera_id)) is not None
                              and c.agent_online, 20)
        report = await core_pb2_grpc.IncidentServiceStub(channel).Report(
            core_pb2.ReportIncidentRequest(incident_type="robbery",
                                           location=core_pb2.GeoPoint(lat=CAMERA.lat, lon=CAMERA.lon)),
            metadata=(("authorization", f"Bearer {police}"),))
        incident = report.incident.incident_id
        stub = core_pb2_grpc.EvidenceServiceStub(channel)
        idle = []
        for _ in range(args.runs):
            await core.wait_until(lambda _: not agent.feeds[CAMERA.camera_id].streaming, 10)
            idle.append(await one_run(core, agent, stub, police, incident))
        async with CameraViewer(core.address, CAMERA.camera_id, webrtc=WebRtcSettings.loopback(),
                                token=district) as viewer:
            await viewer.wait_frames(args.fps * 3, timeout=20)  # a few seconds of pre-roll
            watched = [await one_run(core, agent, stub, police, incident) for _ in range(args.runs)]
    results["idle_camera_ms"] = summary(idle, percentiles=())
    results["watched_camera_pre_roll_ms"] = summary(watched, percentiles=())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=15)
    args = parser.parse_args()
    configure_logging("warning")
    results = asyncio.run(run(args))
    print(json.dumps({"preserve_to_first_frame_on_disk": results, "runs": args.runs,
                      "size": args.size, "fps": args.fps,
                      "load_average": [round(v, 2) for v in os.getloadavg()]}, indent=2))


if __name__ == "__main__":
    main()
