"""Local mode with real parts: a core process SIGKILLed, the district's operator watches through
the agent's own WHEP endpoint, and the core, started again, takes the journal onto its chain."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import av
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from cloud_core import audit as audit_log
from edge_agent.agent import EdgeAgent
from edge_agent.local_settings import LocalSettings
from provisioning.local_operators import add_local_operator
from runtime.webrtc import WebRtcSettings, h264_codecs
from safetynet.broker import MosquittoBroker, free_port
from tests.conftest import GANGNAM, AgentConfigFactory

pytestmark = pytest.mark.media


@asynccontextmanager
async def core_process(tmp_path: Path, mosquitto: MosquittoBroker) -> AsyncIterator[
        asyncio.subprocess.Process]:
    """``safetynet core`` as its own process (so it can be SIGKILLed); stopped on exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "safetynet", "core", "--db", str(tmp_path / "core.sqlite3"),
        "--listen", f"127.0.0.1:{free_port()}", "--broker", f"127.0.0.1:{mosquitto.port}",
        "--log-level", "warning")
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 20)


async def offer() -> tuple[RTCPeerConnection, asyncio.Future[MediaStreamTrack]]:
    """A WHEP player's complete receive-only H.264 offer (aiortc)."""
    pc = RTCPeerConnection(WebRtcSettings.loopback().rtc_configuration())
    pc.addTransceiver("video", direction="recvonly").setCodecPreferences(h264_codecs(with_rtx=False))
    track: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def on_track(received: MediaStreamTrack) -> None:
        if not track.done():
            track.set_result(received)

    await pc.setLocalDescription(await pc.createOffer())
    return pc, track


async def sign_in(http: aiohttp.ClientSession, credential: str) -> tuple[int, dict[str, str]]:
    async with http.post("/local/sign-in", json={"credential": credential}) as response:
        return response.status, await response.json()


async def post_offer(http: aiohttp.ClientSession, camera: str, token: str,
                     pc: RTCPeerConnection) -> aiohttp.ClientResponse:
    return await http.post(f"/local/whep/cameras/{camera}", data=pc.localDescription.sdp,
                           headers={"Authorization": f"Bearer {token}",
                                    "Content-Type": "application/sdp"})


async def watch_locally(http: aiohttp.ClientSession, camera: str, token: str) -> None:
    """Open the camera through the agent's WHEP endpoint, decode frames, close."""
    pc, track = await offer()
    try:
        async with await post_offer(http, camera, token, pc) as r:
            assert r.status == 201, await r.text()
            location = r.headers["Location"]
            answer = await r.text()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        async with asyncio.timeout(15):
            video = await track
            frames = [await video.recv() for _ in range(5)]
        assert all(isinstance(f, av.VideoFrame) for f in frames)
        async with http.delete(location, headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200
    finally:
        await pc.close()


def assert_on_chain(audit_db: Path, head: int, actions: list[tuple[str, str]], camera: str) -> None:
    """The core's chain verifies and holds every journal entry exactly once, in order."""
    assert audit_log.verify(audit_db).ok
    local = [r for r in reversed(audit_log.search(audit_db, limit=1000))
             if "journal" in r.entry.details]
    seqs = [r.entry.details["journal"]["seq"] for r in local]
    assert seqs == list(range(1, head + 1)), "every entry once, in order"
    assert [(r.entry.action.value, r.entry.outcome.value) for r in local] == actions
    view = next(r.entry for r in local if r.entry.action == audit_log.AuditAction.LOCAL_VIEW
                and r.entry.outcome == audit_log.AuditOutcome.OK)
    assert view.camera_ids == (camera,) and view.agency == "district:gangnam"
    assert view.operator_id == "kim"


async def test_with_the_core_killed_the_district_watches_locally_and_the_core_takes_the_journal_in(
        mosquitto: MosquittoBroker, agent_config: AgentConfigFactory, tmp_path: Path) -> None:
    operators = tmp_path / "local-operators.toml"
    credential = add_local_operator(operators, "gangnam", "kim", "operator")
    mapo_credential = add_local_operator(tmp_path / "mapo.toml", "mapo", "lee", "operator")
    journal_file = tmp_path / "local-journal.sqlite3"
    config = agent_config(GANGNAM, cameras=1, heartbeat_seconds=0.5, grant_public_key=None,
                          local=LocalSettings(
                              listen_host="127.0.0.1", listen_port=0, credentials_file=operators,
                              journal_file=journal_file))
    camera = config.cameras[0].camera_id

    async with EdgeAgent(config) as agent:
        assert agent.local is not None and agent.local_console is not None
        assert journal_file.stat().st_mode & 0o777 == 0o600
        async with aiohttp.ClientSession(agent.local_console.url.removesuffix("/local/")) as http:
            async with core_process(tmp_path, mosquitto) as core:
                await agent.core.wait_for(True, 30)
                status, body = await sign_in(http, credential)
                assert status == 200, body
                token = body["token"]
                pc, _ = await offer()
                async with await post_offer(http, camera, token, pc) as r:
                    assert r.status == 409 and (await r.json())["error"] == "core_reachable"
                await pc.close()
                core.send_signal(signal.SIGKILL)
                await core.wait()
                await agent.core.wait_for(False, 10)

            # Bad input: a wrong secret, another district's credential. Clear errors, journaled.
            status, body = await sign_in(http, credential[:-4] + "AAAA")
            assert (status, body["error"]) == (401, "bad_credential"), body
            status, body = await sign_in(http, mapo_credential)
            assert (status, body["error"]) == (403, "wrong_district"), body
            assert "'mapo'" in body["message"] and "'gangnam'" in body["message"]
            await watch_locally(http, camera, token)
        assert not agent.sessions
        journal = agent.local.journal
        head = journal.head_seq
        actions = [(e.action, e.outcome) for e in journal.after(0)]
        assert actions[-4:] == [("local.sign_in", "denied"), ("local.sign_in", "denied"),
                                ("local.view", "ok"), ("local.view_end", "ok")]

        # The core comes back: no agent restart; it pulls what its chain lacks.
        async with core_process(tmp_path, mosquitto):
            await agent.core.wait_for(True, 30)
            await journal.wait_confirmed(head, 30)

    assert_on_chain(tmp_path / "audit.sqlite3", head, actions, camera)
