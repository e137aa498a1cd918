"""Local mode's golden time: with no core, a district operator's first frame through the agent's
own WHEP endpoint, for an idle camera (the agent must first pull it over RTSP) and for a watched
one (its GOP cache answers at once); and what a local sign-in costs (scrypt, n=2^14).

Real parts on loopback: a simulated RTSP camera (720p, 15 fps, 2.5 Mb/s, 1 s GOP by default),
Mosquitto, the edge agent with ``[local]``, an aiortc WHEP player that decodes. No core runs, so
the agent is in local mode throughout. Each time runs from the WHEP POST (offer complete) to the
first decoded frame. Prints min / p50 / max (ms) and the load average as JSON.

    python bench/local_mode.py [--runs 8] [--size 1280x720] [--fps 15]
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

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from media_rig import summary

from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig, CameraConfig
from edge_agent.local_settings import LocalSettings
from provisioning.local_operators import add_local_operator
from runtime.logs import configure_logging
from runtime.mqtt_link import BrokerSettings
from runtime.webrtc import WebRtcSettings, h264_codecs
from safetynet.broker import MosquittoBroker
from simulators.pilot_districts import GANGNAM
from simulators.rtsp_launcher import RtspCameraServer

CAMERA = GANGNAM.cameras[0]


async def watch(http: aiohttp.ClientSession, token: str) -> tuple[float, RTCPeerConnection, str]:
    """Open one local view; (ms from POST to first decoded frame, the peer, its Location)."""
    pc = RTCPeerConnection(WebRtcSettings.loopback().rtc_configuration())
    pc.addTransceiver("video", direction="recvonly").setCodecPreferences(h264_codecs(with_rtx=False))
    track: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def on_track(received: MediaStreamTrack) -> None:
        if not track.done():
            track.set_result(received)

    await pc.setLocalDescription(await pc.createOffer())
    asked = time.monotonic()
    async with http.post(f"/local/whep/cameras/{CAMERA.camera_id}", data=pc.localDescription.sdp,
                         headers={"Authorization": f"Bearer {token}",
                                  "Content-Type": "application/sdp"}) as response:
        if response.status != 201:
            raise RuntimeError(f"local WHEP refused: {response.status} {await response.text()}")
        location, answer = response.headers["Location"], await response.text()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    async with asyncio.timeout(20):
        await (await track).recv()
    return (time.monotonic() - asked) * 1000, pc, location


async def close(http: aiohttp.ClientSession, token: str, pc: RTCPeerConnection,
                location: str) -> None:
    async with http.delete(location, headers={"Authorization": f"Bearer {token}"}):
        pass
    await pc.close()


async def measure(agent: EdgeAgent, credential: str, runs: int) -> dict[str, Any]:
    assert agent.local_console is not None
    base = agent.local_console.url.removesuffix("/local/")
    feed = agent.feeds[CAMERA.camera_id]
    async with aiohttp.ClientSession(base) as http:
        sign_ins, token = [], ""
        for _ in range(runs):
            started = time.monotonic()
            async with http.post("/local/sign-in", json={"credential": credential}) as response:
                token = (await response.json())["token"]
            sign_ins.append((time.monotonic() - started) * 1000)
        idle = []
        for _ in range(runs):
            while feed.streaming:  # the agent closes an unwatched camera after idle_close_seconds
                await asyncio.sleep(0.05)
            ms, pc, location = await watch(http, token)
            idle.append(ms)
            await close(http, token, pc, location)
        _, keeper, keeper_location = await watch(http, token)  # someone is already watching
        watched = []
        for _ in range(runs):
            ms, pc, location = await watch(http, token)
            watched.append(ms)
            await close(http, token, pc, location)
        await close(http, token, keeper, keeper_location)
    return {"sign_in_ms": summary(sign_ins, percentiles=()),
            "idle_camera_first_frame_ms": summary(idle, percentiles=()),
            "watched_camera_first_frame_ms": summary(watched, percentiles=()),
            "journal_entries": agent.local.journal.head_seq if agent.local else 0}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="safetynet-bench-") as tmp:
        state = Path(tmp)
        credential = add_local_operator(state / "local-operators.toml", "gangnam", "kim", "operator")
        cameras = RtspCameraServer([CAMERA.camera_id], gop_s=1.0, fps=args.fps,
                                   size=(width, height), bitrate_kbps=2500)
        await cameras.start()
        try:
            async with MosquittoBroker(work_dir=state) as broker:
                config = AgentConfig(
                    district_id=GANGNAM.district_id, district_name=GANGNAM.name,
                    agent_id="gangnam-agent", broker=BrokerSettings(host=broker.host, port=broker.port),
                    webrtc=WebRtcSettings.loopback(),
                    cameras=(CameraConfig(CAMERA.camera_id, CAMERA.name, CAMERA.lat, CAMERA.lon,
                                          cameras.urls[CAMERA.camera_id]),),
                    idle_close_seconds=0.5,
                    local=LocalSettings(listen_host="127.0.0.1", listen_port=0,
                                        credentials_file=state / "local-operators.toml",
                                        journal_file=state / "local-journal.sqlite3"))
                async with EdgeAgent(config) as agent:
                    return await measure(agent, credential, args.runs)
        finally:
            await cameras.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=15)
    args = parser.parse_args()
    configure_logging("warning")
    results = asyncio.run(run(args))
    print(json.dumps({"local_mode": results, "runs": args.runs, "size": args.size,
                      "fps": args.fps, "load_average": [round(v, 2) for v in os.getloadavg()]},
                     indent=2))


if __name__ == "__main__":
    main()
