"""The real parts the fuzzers feed: Mosquitto, the core (registry, ingest, console) and an edge
agent of Gangnam with two small synthetic cameras, all on loopback in one hosted loop."""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
from aiortc import RTCPeerConnection

from cloud_core.grants import GrantSigner
from cloud_core.registry import CameraUpdate, Registry
from cloud_core.server import CoreServer
from edge_agent.agent import EdgeAgent
from protos.safetynet.v1 import mqtt_pb2
from runtime.grant import GrantClaimsData
from runtime.mqtt_link import BrokerSettings
from runtime.webrtc import WebRtcSettings, h264_codecs
from safetynet.broker import MosquittoBroker
from simulators.pilot_districts import GANGNAM, MAPO
from tests.faults.scenarios import add_operator, agent_config_for, camera_online, core_config_for
from tests.fuzz.harness import LoopHost, hosted

T = TypeVar("T")

#: Every row of every table, table by table.
Snapshot = tuple[tuple[tuple[object, ...], ...], ...]

CAMERAS = tuple(c.camera_id for c in GANGNAM.cameras[:2])


class Rig:
    """The running parts; ``offer`` is a real aiortc viewer's SDP offer (the SDP fuzzer's seed)."""

    def __init__(self, core: CoreServer, agent: EdgeAgent, folder: Path, police_token: str,
                 gangnam_token: str, offer: str) -> None:
        self.core, self.agent, self.folder = core, agent, folder
        self.police_token, self.gangnam_token, self.offer = police_token, gangnam_token, offer
        self.host: LoopHost | None = None  # the loop the rig lives on (set by ``hosted_rig``)
        # Fixed seeds (hypothesis needs the same choices to draw the same data): a request with
        # a grant for a session no offer ever opens, and a close.
        seed = valid_offer_request(self, offer)
        close = mqtt_pb2.SignalRequest(request_id="c1", close=mqtt_pb2.SessionClose(
            session_id="ses-x", reason="r"))
        self.signal_seeds = [seed.SerializeToString(), close.SerializeToString()]
        self.seed_grant = seed.offer.grant

    def __repr__(self) -> str:
        return "Rig(broker, core, gangnam agent)"

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one example's coroutine on the rig's loop."""
        assert self.host is not None
        return self.host.run(coro)

    @property
    def registry(self) -> Registry:
        assert self.core.registry is not None
        return self.core.registry

    @property
    def signer(self) -> GrantSigner:
        assert self.core.access is not None
        return self.core.access.signer

    def grant(self, session_id: str, camera_id: str, *, minutes: float = 5) -> bytes:
        now = datetime.now(UTC)
        return self.signer.sign(GrantClaimsData(
            session_id=session_id, camera_id=camera_id, district_id=GANGNAM.district_id,
            operator_id="gangnam-op", agency="district:gangnam", incident_id="",
            purpose="fuzz", not_before=now, expires_at=now + timedelta(minutes=minutes)))

    def snapshot(self) -> Snapshot:
        """Every row the registry holds (districts, cameras, sessions, incidents)."""
        db = self.registry.db
        return tuple(tuple(db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall())
                     for table in ("districts", "cameras", "sessions", "incidents"))


def new_session_id() -> str:
    return f"ses-{uuid.uuid4().hex}"


def message(topic: str, payload: bytes) -> aiomqtt.Message:
    return aiomqtt.Message(topic, payload, qos=1, retain=False, mid=1, properties=None)


async def viewer_offer() -> str:
    pc = RTCPeerConnection(WebRtcSettings.loopback().rtc_configuration())
    try:
        pc.addTransceiver("video", direction="recvonly").setCodecPreferences(h264_codecs())
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


@contextlib.asynccontextmanager
async def running_rig(*, console: bool = False) -> AsyncIterator[Rig]:
    with tempfile.TemporaryDirectory(prefix="safetynet-fuzz-") as name:
        folder = Path(name)
        async with MosquittoBroker() as broker:
            settings = BrokerSettings(host=broker.host, port=broker.port, keepalive=5)
            config = core_config_for(folder, settings, answer_timeout_seconds=2.0,
                                     http_listen="127.0.0.1:0" if console else "")
            async with CoreServer(config) as core:
                agent_config = replace(agent_config_for(config, cameras=len(CAMERAS)),
                                       idle_close_seconds=0.2)
                async with EdgeAgent(agent_config) as agent:
                    for camera in CAMERAS:
                        await core.wait_until(camera_online(camera), 10)
                    # Mapo, whose topics the core is fuzzed on, and Jongno, which they must
                    # never touch; no live agent speaks for either.
                    assert core.registry is not None
                    core.registry.set_agent(MAPO.district_id, MAPO.name, "mapo-agent", True, "1",
                                            datetime.now(UTC))
                    core.registry.set_agent("jongno", "Jongno-gu", "jongno-agent", True, "1",
                                            datetime.now(UTC))
                    core.registry.upsert_cameras([CameraUpdate(
                        camera_id="jongno-001", district_id="jongno", name="Jongno gate",
                        lat=37.57, lon=126.98, kind="fixed", status="online", reason="",
                        detail="", viewers=0, seen_at=datetime.now(UTC))])
                    yield Rig(core=core, agent=agent, folder=folder,
                              police_token=add_operator(core, "police-op", "police-112"),
                              gangnam_token=add_operator(core),
                              offer=await viewer_offer())


def valid_offer_request(rig: Rig, sdp: str, camera_id: str = CAMERAS[0]) -> mqtt_pb2.SignalRequest:
    session_id = new_session_id()
    offer = mqtt_pb2.SessionOffer(session_id=session_id, camera_id=camera_id, sdp_offer=sdp,
                                  grant=rig.grant(session_id, camera_id))
    return mqtt_pb2.SignalRequest(request_id=uuid.uuid4().hex, offer=offer)


@contextlib.contextmanager
def hosted_rig(*, console: bool = False) -> Iterator[Rig]:
    """The rig on its own loop, for synchronous (hypothesis) tests."""
    with hosted(lambda: running_rig(console=console)) as (host, rig):
        rig.host = host
        yield rig
