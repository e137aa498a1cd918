"""A real coturn on loopback with the REST credentials the core mints: aiortc peers forced to
relay connect through it; an expired or forged credential is refused."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aioice.stun
import aioice.turn
import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from runtime.turn_credentials import TurnSettings, mint, rest_credential
from runtime.webrtc import apply_advertised_addresses
from tests.turn_server import running_coturn, turn_allocate

pytestmark = pytest.mark.skipif(shutil.which("turnserver") is None,
                                reason="coturn is not installed (apt-get install coturn)")
SECRET = "a-test-secret-of-enough-length"


@pytest.fixture
async def coturn(tmp_path: Path) -> AsyncIterator[int]:
    async with running_coturn(tmp_path, SECRET) as port:
        yield port


async def test_minted_credential_allocates_and_bad_ones_are_refused(coturn: int) -> None:
    settings = TurnSettings(urls=(f"turn:127.0.0.1:{coturn}",), secret=SECRET, ttl_seconds=600)
    server = mint(settings, "ses-abc")
    assert server.username is not None and server.credential is not None
    assert server.username.endswith(":ses-abc")
    host, _ = await turn_allocate(coturn, server.username, server.credential)
    assert host == "127.0.0.1"
    expired = rest_credential(SECRET, "ses-abc", int(time.time()) - 10)
    forged = rest_credential("not-the-city-secret-at-all", "ses-abc", int(time.time()) + 600)
    for username, password in (expired, forged, (server.username, server.credential[:-4] + "AAA=")):
        with pytest.raises(aioice.stun.TransactionFailed) as refused:
            await turn_allocate(coturn, username, password)
        assert "401" in str(refused.value) or "Unauthorized" in str(refused.value)


async def test_two_peers_forced_to_relay_connect_through_coturn(coturn: int) -> None:
    apply_advertised_addresses(["127.0.0.1"])
    settings = TurnSettings(urls=(f"turn:127.0.0.1:{coturn}?transport=udp",), secret=SECRET)

    def peer(session: str) -> RTCPeerConnection:
        server = mint(settings, session)
        return RTCPeerConnection(RTCConfiguration(
            iceServers=[RTCIceServer(urls=list(server.urls), username=server.username,
                                     credential=server.credential)],
            iceTransportPolicy=RTCIceTransportPolicy.RELAY))

    viewer, agent = peer("ses-relay"), peer("ses-relay")
    try:
        channel = viewer.createDataChannel("probe")
        opened = asyncio.Event()
        channel.on("open", opened.set)
        await viewer.setLocalDescription(await viewer.createOffer())
        offer = viewer.localDescription.sdp
        assert " typ relay" in offer and " typ host" not in offer
        await agent.setRemoteDescription(viewer.localDescription)
        await agent.setLocalDescription(await agent.createAnswer())
        assert " typ relay" in agent.localDescription.sdp
        await viewer.setRemoteDescription(agent.localDescription)
        async with asyncio.timeout(10):
            await opened.wait()
        assert viewer.iceConnectionState in ("connected", "completed")
    finally:
        await viewer.close()
        await agent.close()


async def test_core_mints_turn_for_both_ends_of_a_session(
        coturn: int, core_config, agent_config, tmp_path: Path) -> None:
    from dataclasses import replace

    from cloud_core.server import CoreServer
    from edge_agent.agent import EdgeAgent
    from runtime.webrtc import WebRtcSettings
    from tests.conftest import GANGNAM
    from viewer.client import CameraViewer

    turn = TurnSettings(urls=(f"turn:127.0.0.1:{coturn}?transport=udp",), secret=SECRET)
    async with CoreServer(replace(core_config, turn=turn)) as core:
        assert core.access is not None
        token = core.access.operators.add("gangnam-op", agency="district:gangnam",
                                          role="operator", policy=core.access.policy)[1]
        async with EdgeAgent(agent_config(GANGNAM, cameras=1)):
            await core.wait_until(lambda r: (r.camera("gangnam-001") or None) is not None
                                  and r.camera("gangnam-001").effective_status == "online", 10)
            async with CameraViewer(core.address, "gangnam-001", webrtc=WebRtcSettings.loopback(),
                                    token=token) as viewer:
                await viewer.wait_frames(3, timeout=10)
                (server,) = viewer.ice_servers
                assert server.username.endswith(":" + viewer.report.session_id)
                assert server.urls == turn.urls
                # The agent gathered a relay candidate with the credentials it got in the offer.
                assert " typ relay" in viewer._pc.remoteDescription.sdp
