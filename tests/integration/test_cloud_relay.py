"""The cloud relay, its media half (docs/cloud-relay.md): 30 viewers of one camera through a
relay put exactly one stream on the district agent's uplink; closing the incident ends the relay
within 5 s. The core does not yet decide *when* to relay: the test starts the relay itself."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from cloud_core.server import CoreServer
from edge_agent.agent import EdgeAgent
from edge_agent.cloud_relay import CloudRelay
from runtime.webrtc import WebRtcSettings, h264_codecs
from tests.conftest import GANGNAM, AgentConfigFactory

pytestmark = pytest.mark.media

VIEWERS = 30


async def viewer(relay: CloudRelay, n: int) -> tuple[RTCPeerConnection, MediaStreamTrack]:
    pc = RTCPeerConnection(WebRtcSettings.loopback().rtc_configuration())
    pc.addTransceiver("video", direction="recvonly").setCodecPreferences(h264_codecs(with_rtx=False))
    track: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def on_track(received: MediaStreamTrack) -> None:
        if not track.done():
            track.set_result(received)

    await pc.setLocalDescription(await pc.createOffer())
    answer = await relay.add_viewer(f"relay-viewer-{n}", pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return pc, await track


async def test_thirty_relay_viewers_cost_the_district_one_stream_and_closing_ends_the_relay(
        core: CoreServer, tokens: dict[str, str], agent_config: AgentConfigFactory) -> None:
    assert core.access is not None
    police = core.access.authenticate(tokens["police-op"])
    camera = GANGNAM.cameras[0]
    report = await core.access.report_incident(police, incident_type="robbery",
                                               lat=camera.lat, lon=camera.lon)
    incident = report.incident.incident.incident_id

    async def open_upstream(offer: str) -> tuple[str, str]:
        opened = await core.access.open_session(police, camera.camera_id, offer,
                                                incident_id=incident)
        return opened.sdp_answer, opened.session_id

    async def close_upstream(session_id: str) -> None:
        return None  # the district has already ended it (the incident closed)

    async with EdgeAgent(agent_config(GANGNAM, cameras=1)) as agent:
        await core.wait_until(lambda r: len(r.list_cameras(status="online")) == 1, 10)
        async with CloudRelay(camera.camera_id, webrtc=WebRtcSettings.loopback(),
                              open_upstream=open_upstream, close_upstream=close_upstream) as relay:
            peers = []
            try:
                for n in range(VIEWERS):
                    peers.append(await viewer(relay, n))
                async with asyncio.timeout(60):
                    await asyncio.gather(*(track.recv() for _, track in peers))
                assert len(relay.sessions) == VIEWERS
                assert len(agent.sessions) == 1, "one stream on the district's uplink"
                assert agent.feeds[camera.camera_id].viewers == 1
                assert relay.source.opens == 1

                closed_at = time.monotonic()
                await core.access.close_incident(police, incident, "suspect arrested")
                async with asyncio.timeout(5):
                    await relay.stopped.wait()
                assert time.monotonic() - closed_at < 5
                assert not relay.sessions and not agent.sessions
            finally:
                for pc, _ in peers:
                    await pc.close()
