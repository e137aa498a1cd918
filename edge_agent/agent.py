"""The edge agent of one district: cameras, viewer sessions, status and signalling over MQTT.

``EdgeAgent`` is an async context manager. Entering connects to the broker (and keeps
reconnecting), publishes ``online`` and every camera's status, and answers session offers that
arrive on the district's signalling topic. Leaving closes every session, says ``offline`` and
disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self, cast

import aiomqtt
import structlog
from google.protobuf.message import DecodeError

from edge_agent.camera_feed import CameraFeed, FeedHealth, FeedState
from edge_agent.camera_probe import CameraProber, ProbeResult
from edge_agent.camera_sources import source_for
from edge_agent.config import AgentConfig
from edge_agent.exceptions import GrantRejected, OfferRejected
from edge_agent.grant_check import GrantVerifier
from edge_agent.metrics import AgentCollector, MetricsServer
from edge_agent.status_reporter import StatusReporter, now_timestamp
from edge_agent.viewer_session import ViewerSession
from protos import topics
from protos.safetynet.v1 import mqtt_pb2
from runtime.exceptions import LinkDown
from runtime.mqtt_link import MqttLink

log = structlog.get_logger(__name__)

MAX_SESSIONS = 256


class EdgeAgent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.status = StatusReporter(config)
        self.feeds: dict[str, CameraFeed] = {}
        self.sessions: dict[str, ViewerSession] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._link: MqttLink | None = None
        self._log = log.bind(district=config.district_id, agent=config.agent_id)
        # Deny unless a grant allows: without the core's public key no offer is ever answered.
        self.grants: GrantVerifier | None = None
        if config.grant_public_key is not None:
            self.grants = GrantVerifier.from_pem_file(
                config.grant_public_key, config.district_id, lambda: datetime.now(UTC),
                issued_after=datetime.now(UTC))
        for camera in config.cameras:
            self.feeds[camera.camera_id] = CameraFeed(
                source_for(camera, config.district_id, config.rtsp),
                idle_close_seconds=config.idle_close_seconds,
                on_health=self._on_feed_health,
            )
        # Idle RTSP cameras are probed so the map shows which work before anyone watches.
        self.prober = CameraProber(config.cameras, config.rtsp, is_idle=self._camera_idle,
                                   on_result=self._on_probe_result)
        self.metrics: MetricsServer | None = None
        if config.metrics_port is not None:
            self.metrics = MetricsServer(AgentCollector(
                config.district_id, self.prober, self.feeds, self.status.camera_states,
                lambda: len(self.sessions)), config.metrics_port)

    @property
    def link(self) -> MqttLink:
        if self._link is None:
            raise RuntimeError("agent not started")
        return self._link

    async def __aenter__(self) -> Self:
        self._link = MqttLink(
            self.config.broker,
            client_id=self.config.agent_id,
            subscriptions=[topics.signal_request(self.config.district_id)],
            on_message=self._on_message,
            on_connect=self.status.publish_online,
            will=self.status.last_will(),
        )
        self.status.attach(self._link)
        await self._link.__aenter__()
        self._heartbeat = asyncio.create_task(self.status.run_heartbeats(), name="heartbeat")
        self.prober.start()
        if self.metrics is not None:
            await self.metrics.start()
        self._log.info("agent started", cameras=len(self.feeds), broker=self.config.broker.describe())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close sessions, then cameras, say offline, disconnect; idempotent."""
        if self._link is None:
            return
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        await self.prober.close()
        if self.metrics is not None:
            await self.metrics.close()
        for session in list(self.sessions.values()):
            await session.close("agent stopping")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, *(t for t in [self._heartbeat] if t),
                             return_exceptions=True)
        for feed in self.feeds.values():
            await feed.close()
        with contextlib.suppress(LinkDown):  # the broker holds our last will: it says offline
            await self.status.publish_offline()
        link, self._link = self._link, None
        await link.close()
        self._log.info("agent stopped")

    # --- signalling -------------------------------------------------------------------------

    async def _on_message(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            self._log.warning("rejected signal message: payload is not bytes", topic=str(message.topic))
            return
        try:
            request = mqtt_pb2.SignalRequest.FromString(bytes(payload))
        except DecodeError as exc:
            self._log.warning("rejected malformed signal request", topic=str(message.topic),
                              error=str(exc), size=len(payload))
            return
        if not request.request_id or request.WhichOneof("body") is None:
            self._log.warning("rejected signal request without request id or body",
                              topic=str(message.topic))
            return
        self._spawn(self._handle(request), f"signal:{request.request_id}")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, request: mqtt_pb2.SignalRequest) -> None:
        response = mqtt_pb2.SignalResponse(request_id=request.request_id)
        try:
            if request.WhichOneof("body") == "offer":
                response.session_id = request.offer.session_id
                response.sdp_answer = await self._open_session(request.offer)
            else:
                response.session_id = request.close.session_id
                await self._close_session(request.close)
                response.closed = True
        except OfferRejected as exc:
            self._log.info("offer rejected", request=request.request_id, code=exc.code,
                           why=exc.message)
            response.error.code = cast(mqtt_pb2.SignalError,
                                       mqtt_pb2.SignalError.Value(f"SIGNAL_ERROR_{exc.code}"))
            response.error.message = exc.message
        except Exception:  # noqa: BLE001 - logged in full, and the core gets an answer
            # Answer rather than leave the core waiting for its timeout; the bug is logged in full.
            self._log.exception("signal request failed", request=request.request_id)
            response.error.code = mqtt_pb2.SIGNAL_ERROR_INTERNAL
            response.error.message = "the agent failed to handle the request; see its log"
        try:
            await self.link.publish(topics.signal_response(self.config.district_id),
                                    response.SerializeToString(), qos=0)
        except LinkDown as exc:
            self._log.warning("signal response lost, link down", request=request.request_id,
                              why=exc.why)

    async def _open_session(self, offer: mqtt_pb2.SessionOffer) -> str:
        feed = self.feeds.get(offer.camera_id)
        if feed is None:
            raise OfferRejected("UNKNOWN_CAMERA",
                                f"camera {offer.camera_id!r} is not in district {self.config.district_id!r}")
        if not offer.session_id:
            raise OfferRejected("BAD_OFFER", "the offer has no session id")
        if offer.session_id in self.sessions:
            raise OfferRejected("BAD_OFFER", f"session {offer.session_id!r} is already open")
        if len(self.sessions) >= MAX_SESSIONS:
            raise OfferRejected("CAPACITY", f"the agent already serves {MAX_SESSIONS} sessions")
        if self.grants is None:
            raise OfferRejected("GRANT_REJECTED", "this agent has no core public key configured "
                                "([grants] public_key), so it accepts no session")
        try:
            claims = self.grants.check(offer.grant, offer.camera_id, offer.session_id)
        except GrantRejected as exc:
            raise OfferRejected("GRANT_REJECTED", exc.reason) from exc
        now = datetime.now(UTC)
        cap = now + timedelta(seconds=self.config.session_max_seconds)
        # The signed grant's expiry rules; the offer's own field is not signed and only shortens it.
        expires_at = claims.expires_at
        if offer.HasField("expires_at"):
            expires_at = min(expires_at, offer.expires_at.ToDatetime(tzinfo=UTC))
        if expires_at <= now:
            raise OfferRejected("GRANT_REJECTED", "the grant has already expired")
        session = ViewerSession(
            session_id=offer.session_id, camera_id=offer.camera_id, feed=feed,
            webrtc=self.config.webrtc, expires_at=min(expires_at, cap),
            on_closed=self._on_session_closed,
        )
        self.sessions[session.session_id] = session
        try:
            answer = await session.answer(offer.sdp_offer)
        except BaseException:
            self.sessions.pop(session.session_id, None)
            raise
        self.status.sessions = len(self.sessions)
        await self._report_camera(offer.camera_id)
        await self._publish_event(session, mqtt_pb2.SessionEvent.KIND_STARTED, "")
        return answer

    async def _close_session(self, close: mqtt_pb2.SessionClose) -> None:
        session = self.sessions.get(close.session_id)
        if session is None:
            raise OfferRejected("UNKNOWN_SESSION", f"session {close.session_id!r} is not open here")
        await session.close(close.reason or "closed by core")

    async def _on_session_closed(self, session: ViewerSession, reason: str) -> None:
        self.sessions.pop(session.session_id, None)
        self.status.sessions = len(self.sessions)
        await self._report_camera(session.camera_id)
        await self._publish_event(session, mqtt_pb2.SessionEvent.KIND_ENDED, reason)

    async def _publish_event(self, session: ViewerSession, kind: int, reason: str) -> None:
        event = mqtt_pb2.SessionEvent(
            session_id=session.session_id, camera_id=session.camera_id, kind=kind,  # type: ignore[arg-type]
            reason=reason, at=now_timestamp(), duration_seconds=session.duration_seconds,
            bytes_sent=session.bytes_sent,
        )
        try:
            await self.link.publish(topics.session_events(self.config.district_id),
                                    event.SerializeToString(), qos=1)
        except (LinkDown, RuntimeError) as exc:
            self._log.warning("session event not published", session=session.session_id, error=str(exc))

    # --- camera status ----------------------------------------------------------------------

    async def _on_feed_health(self, camera_id: str, health: FeedHealth) -> None:
        if health.state is FeedState.IDLE:
            self.prober.probe_soon(camera_id)  # its last pulled state goes stale from now on
        await self._report_camera(camera_id, health)

    async def _report_camera(self, camera_id: str, health: FeedHealth | None = None) -> None:
        feed = self.feeds[camera_id]
        source = feed.source
        await self.status.camera_changed(
            camera_id, health or feed.health, feed.viewers, feed.streaming,
            codec=source.codec, transcoding=source.transcoding,
        )

    def _camera_idle(self, camera_id: str) -> bool:
        return not self.feeds[camera_id].streaming

    async def _on_probe_result(self, camera_id: str, result: ProbeResult) -> None:
        await self.status.camera_probed(camera_id, result.ok, result.reason, result.detail,
                                        result.codec)


async def run_agent(config: AgentConfig, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set (the CLI sets it on SIGINT/SIGTERM)."""
    async with EdgeAgent(config):
        await stop.wait()
