"""Time to first frame through the pilot's real parts.

Starts a Mosquitto broker, the core and both pilot agents (each its own process, as in the demo),
then opens sessions one after another and measures, per session, the time from the OpenSession
call to the first decoded frame. Prints min / p50 / p95 / max (ms) as JSON.

    python bench/time_to_first_frame.py [--sessions 20] [--mode cold|warm] [--source sim:?…]

``cold``: every session opens a camera nobody watches (the agent starts the camera first).
``warm``: a background viewer keeps each camera open, so the new viewer joins a running stream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

from media_rig import summary

from cloud_core.config import CoreConfig
from cloud_core.server import CoreServer
from runtime.logs import configure_logging
from runtime.mqtt_link import BrokerSettings
from runtime.webrtc import WebRtcSettings
from safetynet.broker import MosquittoBroker
from safetynet.demo import AgentProcess
from simulators.agent_configs import write_pilot_configs
from simulators.pilot_districts import PILOT_DISTRICTS
from viewer.client import CameraViewer


async def run(args: argparse.Namespace) -> dict[str, object]:
    webrtc = WebRtcSettings.loopback()
    with tempfile.TemporaryDirectory(prefix="safetynet-bench-") as tmp:
        state = Path(tmp)
        async with MosquittoBroker() as broker:
            core_config = CoreConfig(database=state / "core.sqlite3", listen="127.0.0.1:0",
                                     broker=BrokerSettings(host=broker.host, port=broker.port))
            async with CoreServer(core_config) as core:
                assert core.access is not None
                configs = write_pilot_configs(state / "agents", broker_host=broker.host,
                                              broker_port=broker.port, source=args.source,
                                              grant_public_key=core_config.grant_public_key_path)
                tokens = {d.district_id: core.access.operators.add(
                    f"{d.district_id}-centre", agency=f"district:{d.district_id}", role="operator",
                    policy=core.access.policy)[1] for d in PILOT_DISTRICTS}
                agents = [AgentProcess(p.stem, p, "warning") for p in configs]
                for agent in agents:
                    await agent.start()
                try:
                    cameras = [c.camera_id for d in PILOT_DISTRICTS for c in d.cameras]
                    await core.wait_until(
                        lambda r: len(r.list_cameras(status="online")) >= len(cameras), 30)
                    # Interleave districts: gangnam-001, mapo-001, gangnam-002, ...
                    order = [c for pair in zip(*(d.cameras for d in PILOT_DISTRICTS), strict=True)
                             for c in (p.camera_id for p in pair)][: args.sessions]
                    ttff, open_ms = [], []
                    for camera in order:
                        keeper = None
                        token = tokens[camera.split("-")[0]]
                        if args.mode == "warm":
                            keeper = CameraViewer(core.address, camera, webrtc=webrtc, token=token)
                            await keeper.open()
                            await keeper.wait_frames(args.warm_frames, timeout=10)
                        async with CameraViewer(core.address, camera, webrtc=webrtc,
                                                token=token) as viewer:
                            async with asyncio.timeout(10):
                                await viewer.first_frame.wait()
                            ttff.append(viewer.report.time_to_first_frame_ms or 0.0)
                            open_ms.append(viewer.report.open_session_ms or 0.0)
                        if keeper is not None:
                            await keeper.close()
                finally:
                    for agent in agents:
                        await agent.stop()
    return {
        "benchmark": "time_to_first_frame",
        "mode": args.mode,
        "sessions": len(ttff),
        "source": args.source,
        "time_to_first_frame_ms": summary(ttff),
        "open_session_ms": summary(open_ms),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--mode", choices=["cold", "warm"], default="cold")
    parser.add_argument("--warm-frames", type=int, default=20,
                        help="warm mode: frames the keeper receives before the measured viewer joins")
    parser.add_argument("--source", default="sim:?size=640x360&fps=15&gop=1")
    args = parser.parse_args()
    configure_logging("warning")
    print(json.dumps(asyncio.run(run(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
