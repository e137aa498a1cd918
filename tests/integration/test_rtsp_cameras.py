"""Real cameras end to end: the simulator's RTSP server, an edge agent pulling it, Mosquitto, the
core, and aiortc viewers decoding what arrives, as an agency's operator would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from types import TracebackType
from typing import Self

import aiomqtt
import pytest
from aiortc.codecs.h264 import H264Encoder
from structlog.testing import capture_logs

from cloud_core.server import CoreServer
from edge_agent.agent import EdgeAgent
from edge_agent.camera_sources.transcoder import H264Transcoder
from edge_agent.config import AgentConfig, CameraConfig, RtspSettings
from protos import topics
from protos.safetynet.v1 import mqtt_pb2
from runtime.mqtt_link import BrokerSettings, MqttLink
from runtime.webrtc import WebRtcSettings
from simulators.rtsp_launcher import Fault, RtspCameraServer
from tests.conftest import GANGNAM, AgentConfigFactory
from tests.edge_agent.test_rtsp_source import PASSWORD, needs_server, serve, with_credentials
from viewer.client import CameraViewer

pytestmark = [pytest.mark.media, needs_server]

FIRST, SECOND, THIRD = (c.camera_id for c in GANGNAM.cameras[:3])
OFFLINE, ONLINE = mqtt_pb2.CAMERA_STATE_OFFLINE, mqtt_pb2.CAMERA_STATE_ONLINE


def rtsp_agent(agent_config: AgentConfigFactory, server: RtspCameraServer,
               passwords: dict[str, str] | None = None, transcode: bool = False,
               **rtsp: float) -> AgentConfig:
    """An agent whose cameras are the server's, with credentials in their URLs."""
    cameras = tuple(
        CameraConfig(c.camera_id, c.name, c.lat, c.lon,
                     with_credentials(server.urls[c.camera_id],
                                      password=(passwords or {}).get(c.camera_id, PASSWORD)),
                     transcode=transcode)
        for c in GANGNAM.cameras if c.camera_id in server.urls
    )
    return replace(agent_config(GANGNAM), cameras=cameras, rtsp=RtspSettings(**rtsp))  # type: ignore[arg-type]


def camera_is(camera_id: str, status: str, reason: str = "") -> Callable[[object], bool]:
    def check(registry) -> bool:
        record = registry.camera(camera_id)
        return (record is not None and record.agent_online and record.status == status
                and record.reason == reason)
    return check


class StatusRecorder:
    """Every CameraStatus the district publishes over MQTT, with the time it arrived."""

    def __init__(self, broker: BrokerSettings) -> None:
        self.seen: list[tuple[float, mqtt_pb2.CameraStatus]] = []
        self.payloads: list[bytes] = []
        self._changed = asyncio.Condition()
        self._link = MqttLink(broker, client_id="status-recorder", on_message=self._on_message,
                              subscriptions=[topics.camera_changes(GANGNAM.district_id)])

    async def __aenter__(self) -> Self:
        await self._link.__aenter__()
        await self._link.wait_connected(5)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._link.close()

    async def _on_message(self, message: aiomqtt.Message) -> None:
        payload = bytes(message.payload)
        self.payloads.append(payload)
        changes = mqtt_pb2.CameraChanges.FromString(payload)
        async with self._changed:
            self.seen.extend((time.monotonic(), status) for status in changes.cameras)
            self._changed.notify_all()

    async def wait(self, camera_id: str, predicate: Callable[[mqtt_pb2.CameraStatus], bool],
                   timeout: float, *, after: float = 0.0) -> tuple[float, mqtt_pb2.CameraStatus]:
        """The first status of ``camera_id`` published after ``after`` that satisfies ``predicate``."""
        def found() -> tuple[float, mqtt_pb2.CameraStatus] | None:
            return next(((at, s) for at, s in self.seen if at >= after
                         and s.camera.camera_id == camera_id and predicate(s)), None)

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: found() is not None)
        result = found()
        assert result is not None
        return result


@pytest.fixture
async def statuses(broker_settings: BrokerSettings) -> AsyncIterator[StatusRecorder]:
    async with StatusRecorder(broker_settings) as recorder:
        yield recorder


def viewer(core: CoreServer, camera_id: str, token: str) -> CameraViewer:
    return CameraViewer(core.address, camera_id, webrtc=WebRtcSettings.loopback(), token=token)


async def test_two_viewers_share_one_rtsp_pull_and_nothing_is_reencoded(
        core: CoreServer, agent_config: AgentConfigFactory, tokens: dict[str, str],
        statuses: StatusRecorder, monkeypatch: pytest.MonkeyPatch) -> None:
    encoded = 0
    original = H264Encoder.encode

    def counting_encode(self: H264Encoder, frame: object, force_keyframe: bool = False) -> object:
        nonlocal encoded
        encoded += 1
        return original(self, frame, force_keyframe)  # type: ignore[arg-type]

    monkeypatch.setattr(H264Encoder, "encode", counting_encode)
    transcoders = H264Transcoder.encoders_started
    async with serve((FIRST,)) as server, EdgeAgent(rtsp_agent(agent_config, server)) as agent:
        await core.wait_until(camera_is(FIRST, "online"), 10)
        token = tokens["gangnam-op"]
        async with viewer(core, FIRST, token) as one, viewer(core, FIRST, token) as two:
            await one.wait_frames(10, timeout=10)
            await two.wait_frames(10, timeout=10)
            at_camera = await server.status(FIRST)
            feed = agent.feeds[FIRST]
            assert (feed.source.opens, at_camera.clients, feed.viewers) == (1, 1, 2)
            assert (one.report.width, one.report.height) == (320, 240)
            await statuses.wait(FIRST, lambda s: s.viewers == 2 and s.streaming, 5)
            _, status = statuses.seen[-1]
            assert (status.codec, status.transcoding, status.state) == ("h264", False, ONLINE)
    assert encoded == 0, "the agent encoded frames: passthrough is broken"
    assert H264Transcoder.encoders_started == transcoders


async def test_a_viewer_joining_mid_gop_decodes_before_the_next_key_frame(
        core: CoreServer, agent_config: AgentConfigFactory, tokens: dict[str, str]) -> None:
    fps, gop_s = 10, 4.0
    async with serve((FIRST,), gop_s=gop_s, fps=fps) as server, \
            EdgeAgent(rtsp_agent(agent_config, server)) as agent:
        await core.wait_until(camera_is(FIRST, "online"), 10)
        feed = agent.feeds[FIRST]
        async with viewer(core, FIRST, tokens["gangnam-op"]) as first:
            await first.wait_frames(2, timeout=10)
            async with asyncio.timeout(2 * gop_s):  # 1 s into a GOP: 3 s before the next key frame
                while feed.cached_packets != fps:
                    await asyncio.sleep(0.01)
            keyframes, joined = feed.keyframes_in, time.monotonic()
            async with viewer(core, FIRST, tokens["gangnam-op"]) as second:
                async with asyncio.timeout(gop_s):
                    await second.first_frame.wait()
                waited = time.monotonic() - joined
                assert feed.keyframes_in == keyframes, "the frame came from the next GOP, not the cache"
    assert waited < 1.5


async def test_failed_at_start_is_reported_by_probe_and_recovers_for_an_attached_viewer(
        core: CoreServer, agent_config: AgentConfigFactory, tokens: dict[str, str],
        statuses: StatusRecorder) -> None:
    wrong = "Wr0ng-Pa55"
    with capture_logs() as logs:
        async with serve((FIRST, SECOND, THIRD), faults_at_start={SECOND: Fault.REFUSE}) as server:
            config = rtsp_agent(agent_config, server, passwords={THIRD: wrong},
                                probe_interval_seconds=1.0)
            async with EdgeAgent(config) as agent:
                # Nobody watches yet: probes alone tell the map which cameras work.
                await core.wait_until(camera_is(SECOND, "offline", "refused"), 10)
                await core.wait_until(camera_is(THIRD, "offline", "unauthorized"), 10)
                await core.wait_until(camera_is(FIRST, "online"), 10)
                assert [agent.feeds[c].source.opens for c in (FIRST, SECOND, THIRD)] == [0, 0, 0]

                # A viewer attaches to the refusing camera; the agent keeps trying it for them.
                async with viewer(core, SECOND, tokens["gangnam-op"]) as patient:
                    failed_at, _ = await statuses.wait(
                        SECOND, lambda s: s.streaming and s.state == OFFLINE, 10)
                    await server.set_fault(SECOND, Fault.RESUME)
                    await patient.wait_frames(5, timeout=15)
                    await statuses.wait(SECOND, lambda s: s.state == ONLINE, 5, after=failed_at)
                    await core.wait_until(camera_is(SECOND, "online"), 5)
                    assert agent.feeds[SECOND].source.opens >= 2
                    assert patient.report.session_id in agent.sessions
                record = core.registry.camera(THIRD)
    assert record is not None and PASSWORD not in record.detail and wrong not in record.detail
    for secret in (PASSWORD, wrong):
        assert secret not in repr(logs)
        assert not any(secret.encode() in payload for payload in statuses.payloads)


async def test_stall_and_stop_are_reported_within_5_s_and_the_same_viewer_resumes(
        core: CoreServer, agent_config: AgentConfigFactory, tokens: dict[str, str],
        statuses: StatusRecorder) -> None:
    async with serve((FIRST,)) as server, \
            EdgeAgent(rtsp_agent(agent_config, server, stall_seconds=4.0)) as agent:
        await core.wait_until(camera_is(FIRST, "online"), 10)
        feed = agent.feeds[FIRST]
        async with viewer(core, FIRST, tokens["gangnam-op"]) as watching:
            await watching.wait_frames(5, timeout=10)

            await server.set_fault(FIRST, Fault.STALL)
            offline_at, status = await statuses.wait(FIRST, lambda s: s.state == OFFLINE, 8)
            assert feed.last_packet_at is not None
            silent_for = offline_at - feed.last_packet_at
            assert status.reason == mqtt_pb2.OFFLINE_REASON_STALLED and silent_for <= 5.0
            await core.wait_until(camera_is(FIRST, "offline", "stalled"), 5)

            frames = watching.report.frames
            await server.set_fault(FIRST, Fault.RESUME)
            await watching.wait_frames(frames + 5, timeout=15)
            await statuses.wait(FIRST, lambda s: s.state == ONLINE, 5, after=offline_at)

            frames, stopped_at = watching.report.frames, time.monotonic()
            await server.set_fault(FIRST, Fault.STOP)
            offline_at, status = await statuses.wait(FIRST, lambda s: s.state == OFFLINE, 5,
                                                     after=stopped_at)
            assert status.reason == mqtt_pb2.OFFLINE_REASON_STALLED
            assert offline_at - stopped_at < 2.0
            await watching.wait_frames(frames + 5, timeout=15)
            await statuses.wait(FIRST, lambda s: s.state == ONLINE, 5, after=offline_at)
            assert feed.viewers == 1 and feed.source.opens >= 3
            assert watching.report.session_id in agent.sessions


async def test_a_camera_that_cannot_pass_through_is_transcoded_only_when_allowed(
        core: CoreServer, agent_config: AgentConfigFactory, tokens: dict[str, str],
        statuses: StatusRecorder) -> None:
    async with serve((FIRST,), codec="h265") as server:
        async with EdgeAgent(rtsp_agent(agent_config, server, probe_interval_seconds=1.0)):
            await core.wait_until(camera_is(FIRST, "offline", "codec"), 10)
        transcoders = H264Transcoder.encoders_started
        async with EdgeAgent(rtsp_agent(agent_config, server, transcode=True)):
            await core.wait_until(camera_is(FIRST, "online"), 10)
            async with viewer(core, FIRST, tokens["gangnam-op"]) as watching:
                await watching.wait_frames(5, timeout=10)
                await statuses.wait(FIRST, lambda s: s.transcoding and s.codec == "hevc", 5)
            assert H264Transcoder.encoders_started - transcoders == 1
