"""WHEP over real HTTP: an aiortc player, the core's console port, a real agent with a camera.

Same policy and audit as gRPC's OpenSession: a granted camera plays, a missing or wrong token
gets 401 with a Bearer challenge, a camera outside every grant gets 403 with the reason.
"""

from __future__ import annotations

import asyncio

import aiohttp
import av
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from cloud_core import audit as audit_log
from cloud_core.server import CoreServer
from edge_agent.agent import EdgeAgent
from runtime.webrtc import WebRtcSettings, h264_codecs
from tests.conftest import GANGNAM, AgentConfigFactory
from tests.console.conftest import console_url

pytestmark = pytest.mark.media

GANGNAM_STATION = (37.49795, 127.02760)


async def _offer() -> tuple[RTCPeerConnection, asyncio.Future[MediaStreamTrack]]:
    """An aiortc player's complete receive-only H.264 offer (aiortc does not trickle)."""
    pc = RTCPeerConnection(WebRtcSettings.loopback().rtc_configuration())
    pc.addTransceiver("video", direction="recvonly").setCodecPreferences(h264_codecs(with_rtx=False))
    track: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def on_track(received: MediaStreamTrack) -> None:
        if not track.done():
            track.set_result(received)

    await pc.setLocalDescription(await pc.createOffer())
    return pc, track


def _headers(token: str | None = None, content_type: str = "application/sdp") -> dict[str, str]:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


async def test_whep_plays_a_granted_camera_and_delete_ends_the_session(
        core: CoreServer, tokens: dict[str, str], agent_config: AgentConfigFactory) -> None:
    assert core.access is not None and core.registry is not None
    police = core.access.authenticate(tokens["police-op"])
    report = await core.access.report_incident(police, incident_type="robbery",
                                               lat=GANGNAM_STATION[0], lon=GANGNAM_STATION[1])
    incident_id = report.incident.incident.incident_id
    async with EdgeAgent(agent_config(GANGNAM, cameras=1)) as agent, aiohttp.ClientSession(
            console_url(core)) as http:
        await core.wait_until(lambda r: len(r.list_cameras(status="online")) == 1, 10)
        pc, track = await _offer()
        try:
            async with http.post(f"/whep/cameras/gangnam-001?incident={incident_id}",
                                 data=pc.localDescription.sdp,
                                 headers=_headers(tokens["police-op"])) as response:
                assert response.status == 201, await response.text()
                assert response.content_type == "application/sdp"
                location = response.headers["Location"]
                answer = await response.text()
            assert location.startswith("/whep/sessions/ses-") and answer.startswith("v=0")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            async with asyncio.timeout(10):
                video = await track
                frames = [await video.recv() for _ in range(5)]
            assert isinstance(frames[-1], av.VideoFrame)
            assert (frames[-1].width, frames[-1].height) == (320, 240)
            session_id = location.rsplit("/", 1)[1]
            assert session_id in agent.sessions

            # Only the session's operator (or a supervisor of the agency) may end it.
            async with http.delete(location, headers=_headers(tokens["fire-op"])) as response:
                assert response.status == 404
            async with http.delete(location, headers=_headers(tokens["police-op"])) as response:
                assert response.status == 200
            async with asyncio.timeout(5):
                while session_id in agent.sessions:
                    await asyncio.sleep(0.05)
            async with http.delete(location, headers=_headers(tokens["police-op"])) as response:
                assert response.status == 404
        finally:
            await pc.close()
    assert (core.registry.session(session_id) or {})["close_reason"] == "closed by viewer"
    grant = audit_log.search(core.config.audit_database, action="access.grant", limit=1)[0].entry
    assert (grant.operator_id, grant.camera_ids, grant.incident_id) == (
        "police-op", ("gangnam-001",), incident_id)
    assert grant.details["session_id"] == session_id


async def test_whep_refuses_with_the_right_status_and_says_why(
        core: CoreServer, tokens: dict[str, str]) -> None:
    pc, _ = await _offer()
    offer = pc.localDescription.sdp
    await pc.close()
    url = "/whep/cameras/gangnam-001"
    async with aiohttp.ClientSession(console_url(core)) as http:
        async with http.post(url, data=offer, headers=_headers()) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="safetynet"'
            assert (await response.json())["error"] == "unauthenticated"
        async with http.post(url, data=offer, headers=_headers("snt_forged")) as response:
            assert response.status == 401
            assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]

        # No incident, no standing access: 403, and the reason in words.
        async with http.post(url, data=offer, headers=_headers(tokens["police-op"])) as response:
            assert response.status == 403
            body = await response.json()
            assert body["error"] == "access_denied" and "no incident" in body["message"]
        # An auditor never watches.
        async with http.post(url, data=offer, headers=_headers(tokens["auditor"])) as response:
            assert response.status == 403

        async with http.post(url, data=offer,
                             headers=_headers(tokens["police-op"], "text/plain")) as response:
            assert response.status == 415
            assert "application/sdp" in (await response.json())["message"]
        async with http.post(url, data="hello", headers=_headers(tokens["police-op"])) as response:
            assert response.status == 400
            assert "v=0" in (await response.json())["message"]
        async with http.patch("/whep/sessions/ses-x", data="a=candidate",
                              headers=_headers(tokens["police-op"],
                                               "application/trickle-ice-sdpfrag")
                              ) as response:
            assert response.status == 405   # no trickle ICE: send a complete offer
        async with http.options(url, headers={"Origin": "http://player.example",
                                              "Access-Control-Request-Method": "POST"}) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == "*"
            assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    # Every refusal of a view is on the record, like OpenSession's.
    denials = audit_log.search(core.config.audit_database, action="access.deny")
    assert {r.entry.operator_id for r in denials} == {"police-op", "auditor"}


async def test_a_whep_players_first_frame_lands_in_golden_time_and_no_one_else_may_report_it(
        core: CoreServer, tokens: dict[str, str], agent_config: AgentConfigFactory) -> None:
    assert core.access is not None
    golden = core.access.golden_time
    police = core.access.authenticate(tokens["police-op"])
    report = await core.access.report_incident(police, incident_type="robbery",
                                               lat=GANGNAM_STATION[0], lon=GANGNAM_STATION[1])
    incident_id = report.incident.incident.incident_id
    async with EdgeAgent(agent_config(GANGNAM, cameras=1)), aiohttp.ClientSession(
            console_url(core)) as http:
        await core.wait_until(lambda r: len(r.list_cameras(status="online")) == 1, 10)
        pc, track = await _offer()
        try:
            async with http.post(f"/whep/cameras/gangnam-001?incident={incident_id}",
                                 data=pc.localDescription.sdp,
                                 headers=_headers(tokens["police-op"])) as response:
                assert response.status == 201, await response.text()
                location = response.headers["Location"]
                link = response.headers["Link"]
                answer = await response.text()
            first_frame = f"{location}/first-frame"
            assert link == f'<{first_frame}>; rel="urn:safetynet:first-frame"'
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            async with asyncio.timeout(10):
                await (await track).recv()
            session_id = location.rsplit("/", 1)[1]

            # Someone else's session: not theirs to report, whoever they are; nothing recorded.
            for forger in ("police-sup", "fire-op"):
                async with http.post(first_frame, json={"client": "whep"},
                                     headers={"Authorization": f"Bearer {tokens[forger]}"}
                                     ) as response:
                    assert response.status == 404, forger
                    assert (await response.json())["error"] == "not_found"
            async with http.post(first_frame) as response:
                assert response.status == 401
            for body, problem in ((b"{", "must be empty or JSON"),
                                  (b'{"client": 7}', "client must be a string"),
                                  (b'{"client": "vlc"}', "client must be one of")):
                async with http.post(first_frame, data=body, headers=_headers(
                        tokens["police-op"], "application/json")) as response:
                    assert response.status == 400 and problem in (await response.json())["message"]
            assert golden.rows() == []

            # The player's own report (a bare POST, as a WHEP player that follows the Link).
            async with http.post(first_frame, headers={
                    "Authorization": f"Bearer {tokens['police-op']}"}) as response:
                assert response.status == 200
                recorded = await response.json()
            assert recorded["recorded"] is True and recorded["grant_to_first_frame_ms"] >= 0
            [row] = golden.rows()
            assert (row.session_id, row.incident_id, row.camera_id, row.client, row.service) == (
                session_id, incident_id, "gangnam-001", "whep", "112-emergency-video")
            assert row.reported_at <= row.granted_at <= row.first_frame_at
            assert recorded["report_to_first_frame_ms"] == row.report_to_frame_ms
            # Once per session: a second report changes nothing.
            async with http.post(first_frame, json={"client": "whep"}, headers={
                    "Authorization": f"Bearer {tokens['police-op']}"}) as response:
                assert (await response.json())["recorded"] is False
            assert golden.rows() == [row]
            async with http.options(first_frame, headers={
                    "Origin": "http://player.example",
                    "Access-Control-Request-Method": "POST"}) as response:
                assert response.status == 204
        finally:
            await pc.close()
    assert golden.daily()[0]["cameras"] == 1
