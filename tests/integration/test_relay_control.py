"""The cloud relay end to end, its control half (docs/cloud-relay.md): a real Mosquitto, the core,
a district agent pulling a simulated RTSP camera, a relay process (``RelayNode``) registered with
its own key, and aiortc viewers opening sessions through the core's OpenSession path.

- an incident that asks for a relay: 30 viewers cost the district's uplink exactly one stream
  (the agent has one sender), every viewer decodes, every view is on the record "via relay";
  closing the incident ends the relay's pull and every session within 5 s;
- a district's uplink budget spent: the next incident view goes through a relay on its own;
- bad input: a relay registering under a wrong identity is refused; a grant outside the
  relayed incident is refused by the relay itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from cloud_core.access.caller import Caller
from cloud_core.audit import AuditAction
from cloud_core.config import CoreConfig
from cloud_core.exceptions import SessionRejected
from cloud_core.server import CoreServer
from cloud_core.sessions import OpenedSession
from edge_agent.agent import EdgeAgent
from edge_agent.relay_node import RelayConfig, RelayNode
from protos.safetynet.v1 import mqtt_pb2
from runtime.grant import GrantClaimsData
from runtime.mqtt_link import BrokerSettings
from runtime.signing_keys import load_or_create_signing_key, write_public_key
from runtime.webrtc import WebRtcSettings, h264_codecs
from tests.conftest import GANGNAM, AgentConfigFactory
from tests.edge_agent.test_rtsp_source import needs_server, serve
from tests.integration.test_rtsp_cameras import rtsp_agent

pytestmark = pytest.mark.media

RELAY = "relay-1"
VIEWERS = 30
CAMERA = GANGNAM.cameras[0]


@pytest.fixture
def relay_keys(tmp_path: Path) -> dict[str, Path]:
    """relay id -> its private key file; the public halves go into the core's [relays]."""
    keys = {}
    for relay_id in (RELAY, "relay-impostor"):
        key = tmp_path / f"{relay_id}.key"
        write_public_key(key.with_suffix(".pub"), load_or_create_signing_key(key))
        keys[relay_id] = key
    return keys


@pytest.fixture
def core_config(core_config: CoreConfig, relay_keys: dict[str, Path]) -> CoreConfig:
    return replace(core_config, relay_keys={RELAY: relay_keys[RELAY].with_suffix(".pub")})


def relay_config(broker: BrokerSettings, core_config: CoreConfig, key: Path,
                 relay_id: str = RELAY) -> RelayConfig:
    return RelayConfig(relay_id=relay_id, broker=broker, webrtc=WebRtcSettings.loopback(),
                       grant_public_key=core_config.grant_public_key_path, identity_key=key)


@pytest.fixture
async def relay(broker_settings: BrokerSettings, core_config: CoreConfig, core: CoreServer,
                relay_keys: dict[str, Path]) -> AsyncIterator[RelayNode]:
    assert core.relays is not None
    async with RelayNode(relay_config(broker_settings, core_config, relay_keys[RELAY])) as node:
        await core.relays.wait_until(lambda desk: RELAY in desk.online, 10)
        yield node


class Viewer:
    """One aiortc viewer that opens its session through the core, as OpenSession does."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(WebRtcSettings.loopback().rtc_configuration())
        self.opened: OpenedSession | None = None
        self.track: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()

    async def open(self, core: CoreServer, caller: Caller, incident_id: str) -> OpenedSession:
        assert core.access is not None
        self.pc.addTransceiver("video", direction="recvonly").setCodecPreferences(
            h264_codecs(with_rtx=False))

        @self.pc.on("track")
        def on_track(received: MediaStreamTrack) -> None:
            if not self.track.done():
                self.track.set_result(received)

        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.opened = await core.access.open_session(
            caller, CAMERA.camera_id, self.pc.localDescription.sdp, incident_id=incident_id)
        await self.pc.setRemoteDescription(
            RTCSessionDescription(sdp=self.opened.sdp_answer, type="answer"))
        return self.opened

    async def frame(self) -> None:
        track = await self.track
        await track.recv()


async def robbery(core: CoreServer, caller: Caller) -> str:
    assert core.access is not None
    report = await core.access.report_incident(caller, incident_type="robbery", lat=CAMERA.lat,
                                               lon=CAMERA.lon)
    return report.incident.incident.incident_id


@needs_server
async def test_an_incident_relay_serves_thirty_viewers_on_one_district_stream(
        core: CoreServer, tokens: dict[str, str], agent_config: AgentConfigFactory,
        relay: RelayNode) -> None:
    assert core.access is not None and core.registry is not None and core.audit is not None
    police = core.access.authenticate(tokens["police-op"])
    async with serve((CAMERA.camera_id,)) as server, \
            EdgeAgent(rtsp_agent(agent_config, server)) as agent:
        await core.wait_until(lambda r: len(r.list_cameras(status="online")) == 1, 10)
        incident = await robbery(core, police)
        core.access.ask_relay(police, incident)  # ReportIncidentRequest{relay: true}
        # A crowd: one police operator per viewer (an operator holds at most 16 sessions).
        crowd = [core.access.authenticate(core.access.operators.add(
            f"police-{n}", agency="police-112", role="operator", policy=core.access.policy)[1])
            for n in range(VIEWERS)]
        viewers = [Viewer() for _ in range(VIEWERS)]
        try:
            for viewer, operator in zip(viewers, crowd, strict=True):
                opened = await viewer.open(core, operator, incident)
                assert opened.via_relay == RELAY
            async with asyncio.timeout(60):
                await asyncio.gather(*(v.frame() for v in viewers))

            # One stream leaves the district: the agent has one sender, the relay's pull.
            assert len(agent.sessions) == 1 and agent.relay_sessions == set(agent.sessions)
            assert sum(s.sender is not None for s in agent.sessions.values()) == 1
            assert agent.feeds[CAMERA.camera_id].viewers == 1
            assert agent.uplink_streams == 0  # the relay's pull is off the budget
            assert len(relay.cameras[CAMERA.camera_id].relay.sessions) == VIEWERS
            assert relay.cameras[CAMERA.camera_id].relay.source.opens == 1

            # Every view is on the record as any other, noting the relay.
            opens = await core.audit.search(incident_id=incident, action=AuditAction.SESSION_OPEN,
                                            limit=200)
            viewer_opens = [r for r in opens if r.entry.operator_id.startswith("police-")]
            assert len(viewer_opens) == VIEWERS
            assert all(r.entry.details["via"] == "relay" and r.entry.details["relay_id"] == RELAY
                       for r in viewer_opens)
            upstream = [r for r in opens if r.entry.operator_id == f"system:relay:{RELAY}"]
            assert len(upstream) == 1 and upstream[0].entry.details["via"] == "relay upstream"

            closed_at = time.monotonic()
            await core.access.close_incident(police, incident, "suspect arrested")
            async with asyncio.timeout(5):
                while relay.cameras or agent.sessions or core.registry.open_sessions():
                    await asyncio.sleep(0.05)
            assert time.monotonic() - closed_at < 5
        finally:
            for viewer in viewers:
                await viewer.pc.close()


async def test_a_spent_uplink_budget_sends_the_next_incident_view_through_the_relay(
        core: CoreServer, tokens: dict[str, str], agent_config: AgentConfigFactory,
        relay: RelayNode) -> None:
    assert core.access is not None
    police = core.access.authenticate(tokens["police-op"])
    district = core.access.authenticate(tokens["gangnam-op"])
    async with EdgeAgent(agent_config(GANGNAM, cameras=1, uplink_streams=2)) as agent:
        await core.wait_until(lambda r: len(r.list_cameras(status="online")) == 1, 10)
        incident = await robbery(core, police)
        viewers = [Viewer() for _ in range(4)]
        try:
            routes = [(await v.open(core, police, incident)).via_relay for v in viewers]
            assert routes == ["", "", RELAY, RELAY]
            async with asyncio.timeout(30):
                await asyncio.gather(*(v.frame() for v in viewers))
            assert agent.uplink_streams == 2 and len(agent.relay_sessions) == 1

            # A view with no incident is never relayed: the full uplink refuses it, clearly.
            standing = Viewer()
            with pytest.raises(SessionRejected, match="uplink carries 2 streams") as refused:
                await standing.open(core, district, "")
            assert refused.value.code == mqtt_pb2.SIGNAL_ERROR_UPLINK_FULL
            await standing.pc.close()
        finally:
            for viewer in viewers:
                await viewer.pc.close()


async def test_a_relay_under_a_wrong_identity_is_refused(
        core: CoreServer, broker_settings: BrokerSettings, core_config: CoreConfig,
        relay_keys: dict[str, Path]) -> None:
    assert core.relays is not None
    # relay-1's name with another key, and a relay the core does not know.
    forged = relay_config(broker_settings, core_config, relay_keys["relay-impostor"])
    unknown = relay_config(broker_settings, core_config, relay_keys["relay-impostor"],
                           relay_id="relay-impostor")
    async with RelayNode(forged), RelayNode(unknown):
        await core.relays.wait_until(lambda desk: len(desk.refusals) >= 2, 10)
    reasons = {r.relay_id: r.reason for r in core.relays.refusals}
    assert reasons[RELAY] == "the status is not signed by relay 'relay-1''s key"
    assert "not one of this core's relays" in reasons["relay-impostor"]
    assert not core.relays.online


async def test_the_relay_refuses_a_grant_outside_its_incident(
        core: CoreServer, tokens: dict[str, str], agent_config: AgentConfigFactory,
        relay: RelayNode) -> None:
    assert core.access is not None
    police = core.access.authenticate(tokens["police-op"])
    async with EdgeAgent(agent_config(GANGNAM, cameras=1)):
        await core.wait_until(lambda r: len(r.list_cameras(status="online")) == 1, 10)
        incident = await robbery(core, police)
        core.access.ask_relay(police, incident)
        first = Viewer()
        try:
            assert (await first.open(core, police, incident)).via_relay == RELAY
            other = Viewer()
            other.pc.addTransceiver("video", direction="recvonly")
            await other.pc.setLocalDescription(await other.pc.createOffer())
            now = datetime.now(UTC)

            def offer(incident_id: str, session_id: str) -> mqtt_pb2.SignalRequest:
                grant = core.access.signer.sign(GrantClaimsData(
                    session_id=session_id, camera_id=CAMERA.camera_id,
                    district_id=GANGNAM.district_id, operator_id="police-op", agency="police-112",
                    incident_id=incident_id, purpose="test", not_before=now,
                    expires_at=now + timedelta(minutes=5)))
                return mqtt_pb2.SignalRequest(request_id=session_id, offer=mqtt_pb2.SessionOffer(
                    session_id=session_id, camera_id=CAMERA.camera_id,
                    sdp_offer=other.pc.localDescription.sdp, grant=grant))

            for incident_id, session_id in (("INC-other", "ses-other"), ("", "ses-standing")):
                response = await relay.answer(offer(incident_id, session_id))
                assert response.error.code == mqtt_pb2.SIGNAL_ERROR_GRANT_REJECTED
                assert f"serves camera {CAMERA.camera_id!r} for incident {incident!r} only" in \
                    response.error.message
            forged = offer(incident, "ses-forged")
            forged.offer.grant = forged.offer.grant[:-1] + bytes([forged.offer.grant[-1] ^ 1])
            response = await relay.answer(forged)
            assert response.error.code == mqtt_pb2.SIGNAL_ERROR_GRANT_REJECTED
            assert "bad signature" in response.error.message
            assert len(relay.cameras[CAMERA.camera_id].relay.sessions) == 1
            await other.pc.close()
        finally:
            await first.pc.close()
