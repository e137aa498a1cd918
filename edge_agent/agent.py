"""The edge agent of one district: cameras, viewer sessions, status and signalling over MQTT.

``EdgeAgent`` is an async context manager. Entering connects to the broker (and keeps
reconnecting), publishes ``online`` and every camera's status, and answers session offers that
arrive on the district's signalling topic. Leaving closes every session, says ``offline`` and
disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

import aiomqtt
import structlog
from google.protobuf.message import DecodeError

from edge_agent.camera_feed import CameraFeed, FeedHealth, FeedState
from edge_agent.camera_probe import CameraProber, ProbeResult
from edge_agent.camera_sources import source_for
from edge_agent.checkpoint_witness import CheckpointWitness
from edge_agent.config import AgentConfig
from edge_agent.evidence import EvidenceDesk
from edge_agent.exceptions import GrantRejected, OfferRejected
from edge_agent.grant_check import GrantVerifier
from edge_agent.local_access import CoreReachability, LocalAccess, LocalView, load_local_operators
from edge_agent.local_console import LocalConsole
from edge_agent.local_journal import LocalJournal
from edge_agent.metrics import AgentCollector, MetricsServer
from edge_agent.status_reporter import StatusReporter, now_timestamp
from edge_agent.still_capture import take_still
from edge_agent.viewer_session import ViewerSession
from protos import topics
from protos.safetynet.v1 import mqtt_pb2
from protos.topics import Kind, Route
from runtime.background import BackgroundTasks
from runtime.exceptions import LinkDown
from runtime.mqtt_link import MqttLink
from runtime.standby_link import SETTLE_S, SeenRequests, SignalPair
from runtime.turn_credentials import from_proto as turn_from_proto
from runtime.turn_credentials import with_session_servers
from runtime.webrtc import WebRtcSettings

log = structlog.get_logger(__name__)

STANDBY_BEAT_S = 2.0
"""How often the heartbeat also goes on the standby while the main link is down or unsettled."""


class EdgeAgent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.status = StatusReporter(config)
        self.feeds: dict[str, CameraFeed] = {}
        self.sessions: dict[str, ViewerSession] = {}
        self.relay_sessions: set[str] = set()  # upstream pulls of cloud relays (off the budget)
        self._tasks = BackgroundTasks(f"agent:{config.agent_id}")
        self._stack: contextlib.AsyncExitStack | None = None
        self._link: MqttLink | None = None
        self._signal: SignalPair | None = None  # the link, and its standby on a cluster
        self._requests_seen = SeenRequests()  # a request that came on both links is one
        self._log = log.bind(district=config.district_id, agent=config.agent_id)
        self.witness = (CheckpointWitness(config.audit_witness_file)
                        if config.audit_witness_file is not None else None)
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
        self.evidence: EvidenceDesk | None = None
        if config.evidence is not None:
            self.evidence = EvidenceDesk(
                config.evidence, district_id=config.district_id, agent_id=config.agent_id,
                feeds=self.feeds, grants=self.grants, publish=self._publish_evidence_event)
        self.core = CoreReachability(lambda: self._link is not None and self._link.connected.is_set())
        self.local: LocalAccess | None = None          # [local]: docs/local-mode.md
        self.local_console: LocalConsole | None = None
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
        """Connect, then start heartbeats and probes; a failed step stops what had started."""
        async with contextlib.AsyncExitStack() as stack:
            await self._start(stack)
            self._stack = stack.pop_all()
        self._log.info("agent started", cameras=len(self.feeds), broker=self.config.broker.describe())
        return self

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        # Unwound in reverse: sessions, probes, tasks, cameras, "offline", the link.
        subscriptions: list[Route | str] = [topics.route(Kind.SIGNAL_REQUEST, self.config.district_id)]
        if self.witness is not None:
            subscriptions.append(topics.route(Kind.AUDIT_CHECKPOINT, self.config.district_id))
        if self.config.local is not None:
            subscriptions.append(topics.core_status_route())
        link = MqttLink(
            self.config.broker,
            client_id=self.config.agent_id,
            subscriptions=subscriptions,
            on_message=self._on_message,
            on_connect=self._link_up,
            will=self.status.last_will,  # a fresh will, and connection stamp, per attempt
        )
        self.status.attach(link)
        self._link = await stack.enter_async_context(link)
        stack.callback(setattr, self, "_link", None)
        self._signal = SignalPair(link, await self._standby(stack))
        stack.callback(setattr, self, "_signal", None)
        stack.push_async_callback(self._say_offline)
        for feed in self.feeds.values():
            await stack.enter_async_context(feed)
        self._tasks = await stack.enter_async_context(BackgroundTasks(f"agent:{self.config.agent_id}"))
        self._tasks.start(self.status.run_heartbeats(), name="heartbeat")
        self._tasks.start(self.status.run_changes(), name="camera-changes")
        if self._signal.standby is not None:
            self._tasks.start(self._beat_on_standby(link, self._signal.standby),
                              name="standby-heartbeat")
        stack.push_async_callback(self.prober.close)
        self.prober.start()
        if self.evidence is not None:
            stack.push_async_callback(self.evidence.close)
            self.evidence.start()
        if self.config.local is not None:
            await self._start_local(stack)
        if self.metrics is not None:
            await self.metrics.start()
            stack.push_async_callback(self.metrics.close)
        stack.push_async_callback(self._close_sessions, "agent stopping")

    async def _start_local(self, stack: contextlib.AsyncExitStack) -> None:
        """Local mode's journal, access and console (docs/local-mode.md)."""
        settings = self.config.local
        assert settings is not None
        operators = load_local_operators(settings.credentials_file, self.config.district_id)
        journal = LocalJournal(settings.journal_file, self.config.district_id)
        stack.callback(journal.close)
        self.status.journal_seq = lambda: journal.head_seq
        self.local = LocalAccess(
            district_id=self.config.district_id, operators=operators,
            camera_ids=list(self.feeds), journal=journal, core=self.core,
            session=timedelta(minutes=settings.session_minutes))
        stack.callback(setattr, self, "local", None)
        console = LocalConsole(
            self.local, [(c.camera_id, c.name) for c in self.config.cameras],
            host=settings.listen_host, port=settings.listen_port,
            open_session=self.open_local_session, close_session=self._close_local_session)
        self.local_console = await stack.enter_async_context(console)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close sessions, probes, then cameras, say offline, disconnect; idempotent."""
        stack, self._stack = self._stack, None
        if stack is None:
            return
        await stack.aclose()
        self._log.info("agent stopped")

    async def _close_sessions(self, reason: str) -> None:
        for session in list(self.sessions.values()):
            await session.close(reason)

    async def _link_up(self) -> None:
        """After each (re)connect: say online; evidence events that waited for the link go out."""
        await self.status.publish_online()
        if self.evidence is not None:
            self.evidence.link_up()

    async def _say_offline(self) -> None:
        """On a clean stop, ``offline`` on the link; while it is down (a stop during a
        reconnect, which leaves no last will behind), on the standby, when there is one."""
        if await self.status.publish_offline():
            return
        standby = self._signal.standby if self._signal is not None else None
        if standby is None:
            return
        offline = self.status.agent_status(mqtt_pb2.AGENT_STATE_OFFLINE)
        try:
            # QoS 0: a cluster mid-election acknowledges nothing, but passes it on to the cores.
            await standby.publish(topics.agent_status(self.config.district_id),
                                  offline.SerializeToString(), qos=0, retain=True)
        except LinkDown as exc:
            self._log.warning("could not say offline: both broker links are down", why=exc.why)
        else:
            self._log.info("said offline on the standby link")

    # --- signalling -------------------------------------------------------------------------

    async def _standby(self, stack: contextlib.AsyncExitStack) -> MqttLink | None:
        """On a clustered broker, a second connection on another node for signal requests
        alone (``runtime.standby_link``): a new session need not wait for this agent to
        reconnect after its node's loss. None on one broker."""
        settings = self.config.broker.standby_settings()
        if settings is None:
            return None
        route = topics.route(Kind.SIGNAL_REQUEST, self.config.district_id)
        standby = MqttLink(settings, client_id=f"{self.config.agent_id}-standby",
                           subscriptions=[replace(route, qos=0)],
                           on_message=self._on_standby_message)
        return await stack.enter_async_context(standby)

    async def _beat_on_standby(self, main: MqttLink, standby: MqttLink) -> None:
        """While the main link is down or unsettled, the heartbeat goes on the standby too.

        It names the main link's newest connection attempt: a cluster recovering from a node's
        loss drops connections made meanwhile and fires their wills late, and a heartbeat of a
        newer connection takes the agent for online again at the core, where the agent's own
        status would wait for the main link to reconnect. QoS 0: a cluster mid-election
        acknowledges nothing, but passes it on. (Should the agent die meanwhile, the core's
        silence timeout takes it offline.)"""
        while True:
            await asyncio.sleep(STANDBY_BEAT_S)
            await self._standby_beat(main, standby)

    async def _standby_beat(self, main: MqttLink, standby: MqttLink) -> bool:
        """One beat on the standby, unless the main link is settled; True when it went out."""
        if main.up_for() >= SETTLE_S or not standby.connected.is_set():
            return False
        try:
            await standby.publish(topics.heartbeat(self.config.district_id),
                                  self.status.heartbeat().SerializeToString(), qos=0,
                                  retain=True)
        except LinkDown:
            return False
        return True

    def _has_standby(self) -> bool:
        return self._signal is not None and self._signal.standby is not None

    async def _on_standby_message(self, message: aiomqtt.Message) -> None:
        """A signal request that came on the standby (its copy on the main link is dropped)."""
        if str(message.topic) == topics.signal_request(self.config.district_id):
            await self._on_message(message)

    async def _on_message(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            self._log.warning("rejected signal message: payload is not bytes", topic=str(message.topic))
            return
        if self.witness is not None and str(message.topic) == topics.audit_checkpoint(
                self.config.district_id):
            await self.witness.handle(bytes(payload))
            return
        if (replica := topics.core_replica_of(str(message.topic))) is not None:
            await self._on_core_status(replica, bytes(payload))
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
        if self._has_standby() and not self._requests_seen.first(request.request_id):
            # Its copy from the other link is answered already. (With one link a repeated id is
            # answered again: a replayed grant is then refused as a replay, on the record.)
            return
        if self._tasks.closed:
            self._log.info("signal request during shutdown ignored", request=request.request_id)
            return
        self._tasks.start(self._handle(request), name=f"signal:{request.request_id}")

    async def _on_core_status(self, replica: str, payload: bytes) -> None:
        try:
            status = mqtt_pb2.CoreStatus.FromString(payload)
        except DecodeError as exc:
            self._log.warning("rejected malformed core status", error=str(exc))
            return
        await self.core.core_status(status.online, replica)

    async def _handle(self, request: mqtt_pb2.SignalRequest) -> None:
        response = await self.answer(request)
        try:
            await (self._signal or self.link).send(
                topics.route(Kind.SIGNAL_RESPONSE, self.config.district_id),
                response.SerializeToString())
        except LinkDown as exc:
            self._log.warning("signal response lost, link down", request=request.request_id,
                              why=exc.why)

    async def answer(self, request: mqtt_pb2.SignalRequest) -> mqtt_pb2.SignalResponse:
        """The agent's answer to one signal request: an SDP answer, ``closed``, or a failure.

        A responder in the sense of ``cloud_core.signalling``: the MQTT link feeds it here, and a
        test can feed it in-process.
        """
        response = mqtt_pb2.SignalResponse(request_id=request.request_id)
        try:
            if request.WhichOneof("body") == "journal_fetch":
                response.journal.CopyFrom(await self._journal_batch(request.journal_fetch))
            elif (request.WhichOneof("body") or "").startswith("evidence_"):
                response.evidence.CopyFrom(await self._evidence_reply(request))
            elif request.WhichOneof("body") == "offer":
                response.session_id = request.offer.session_id
                response.sdp_answer = await self._open_session(request.offer)
            elif request.WhichOneof("body") == "still":
                response.session_id = request.still.still_id
                response.still_jpeg = await take_still(request.still, self.feeds, self.grants)
            else:
                response.session_id = request.close.session_id
                await self._close_session(request.close)
                response.closed = True
        except OfferRejected as exc:
            self._log.info("offer rejected", request=request.request_id,
                           code=mqtt_pb2.SignalError.Name(exc.code), why=exc.message)
            response.error.code = exc.code
            response.error.message = exc.message
        except Exception:  # noqa: BLE001 - answer rather than leave the core waiting for its timeout
            # The bug is logged in full.
            self._log.exception("signal request failed", request=request.request_id)
            response.error.code = mqtt_pb2.SIGNAL_ERROR_INTERNAL
            response.error.message = "the agent failed to handle the request; see its log"
        return response

    async def _evidence_reply(self, request: mqtt_pb2.SignalRequest) -> mqtt_pb2.EvidenceReply:
        if self.evidence is None:
            return mqtt_pb2.EvidenceReply(error=mqtt_pb2.EvidenceFailure(
                code=mqtt_pb2.EVIDENCE_ERROR_DISABLED,
                message=f"the agent of {self.config.district_id!r} keeps no evidence clips "
                        "(no [evidence] section in its config)"))
        return await self.evidence.handle(request)

    async def _publish_evidence_event(self, payload: bytes) -> None:
        await self.link.send(topics.route(Kind.EVIDENCE_EVENTS, self.config.district_id), payload)

    async def _journal_batch(self, fetch: mqtt_pb2.JournalFetch) -> mqtt_pb2.JournalBatch:
        """Entries after the core's last; asking after N confirms that the core holds 1..N."""
        if self.local is None:
            return mqtt_pb2.JournalBatch()
        journal = self.local.journal
        await journal.confirm(fetch.after_seq)
        entries = journal.after(fetch.after_seq, fetch.limit)
        return mqtt_pb2.JournalBatch(entries=[e.to_proto() for e in entries],
                                     head_seq=journal.head_seq)

    async def open_local_session(self, view: LocalView, sdp_offer: str) -> str:
        """Serve a view ``LocalAccess`` allowed (local mode): same feed and session as the core's."""
        self._check_capacity()
        return await self._start_session(view.session_id, view.camera_id, sdp_offer,
                                         view.expires_at)

    def _check_capacity(self) -> None:
        """OfferRejected(CAPACITY) while every viewer slot is taken; the core then frees one for
        an emergency by closing a standing-access session (``cloud_core.session_capacity``)."""
        if len(self.sessions) >= self.config.max_sessions:
            raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_CAPACITY,
                                f"the agent already serves {self.config.max_sessions} sessions "
                                "(all its viewer slots)")

    async def _close_local_session(self, session_id: str, reason: str) -> None:
        session = self.sessions.get(session_id)
        if session is not None:
            await session.close(reason)

    async def _open_session(self, offer: mqtt_pb2.SessionOffer) -> str:
        feed = self.feeds.get(offer.camera_id)
        if feed is None:
            raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_UNKNOWN_CAMERA,
                                f"camera {offer.camera_id!r} is not in district {self.config.district_id!r}")
        if not offer.session_id:
            raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_BAD_OFFER, "the offer has no session id")
        if offer.session_id in self.sessions:
            raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_BAD_OFFER, f"session {offer.session_id!r} is already open")
        self._check_capacity()
        if self.grants is None:
            raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_GRANT_REJECTED,
                                "this agent has no core public key configured "
                                "([grants] public_key), so it accepts no session")
        try:
            claims = self.grants.check(offer.grant, offer.camera_id, offer.session_id)
        except GrantRejected as exc:
            raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_GRANT_REJECTED, exc.reason) from exc
        self._check_uplink(claims.for_relay)
        now = datetime.now(UTC)
        cap = now + timedelta(seconds=self.config.session_max_seconds)
        # The signed grant's expiry rules; the offer's own field is not signed and only shortens it.
        expires_at = claims.expires_at
        if offer.HasField("expires_at"):
            try:
                offered = offer.expires_at.ToDatetime(tzinfo=UTC)
            except (ValueError, OverflowError) as exc:  # out of datetime's (or Timestamp's) range
                raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_BAD_OFFER,
                                    f"the offer's expires_at is not a valid time: {exc}") from exc
            expires_at = min(expires_at, offered)
        if expires_at <= now:
            raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_GRANT_REJECTED,
                                "the grant has already expired")
        webrtc = with_session_servers(self.config.webrtc, turn_from_proto(offer.ice_servers))
        if claims.for_relay:
            self.relay_sessions.add(offer.session_id)
        try:
            return await self._start_session(offer.session_id, offer.camera_id, offer.sdp_offer,
                                             min(expires_at, cap), webrtc)
        except BaseException:
            self.relay_sessions.discard(offer.session_id)
            raise

    @property
    def uplink_streams(self) -> int:
        """Direct viewer streams this agent sends to the cloud now (not local, not a relay's)."""
        local = self.local.views if self.local is not None else {}
        return sum(1 for s in self.sessions if s not in local and s not in self.relay_sessions)

    def _check_uplink(self, for_relay: bool) -> None:
        """Refuse a direct stream beyond the uplink budget; a relay's one pull is always let in
        (it is what relieves the uplink: docs/cloud-relay.md)."""
        budget = self.config.uplink_streams
        if for_relay or budget == 0 or self.uplink_streams < budget:
            return
        raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_UPLINK_FULL,
                            f"district {self.config.district_id!r}'s uplink carries {budget} "
                            f"streams and all are in use")

    async def _start_session(self, session_id: str, camera_id: str, sdp_offer: str,
                             expires_at: datetime, webrtc: WebRtcSettings | None = None) -> str:
        """Answer ``sdp_offer`` for ``camera_id`` (a core's offer or a local one) until ``expires_at``."""
        session = ViewerSession(
            session_id=session_id, camera_id=camera_id, feed=self.feeds[camera_id],
            webrtc=webrtc or self.config.webrtc, expires_at=expires_at,
            on_closed=self._on_session_closed,
        )
        self.sessions[session.session_id] = session
        try:
            answer = await session.answer(sdp_offer)
        except BaseException:
            self.sessions.pop(session.session_id, None)
            raise
        self.status.sessions = len(self.sessions)
        await self._report_camera(camera_id)
        if not self._is_local(session_id):
            await self._publish_event(session, mqtt_pb2.SessionEvent.KIND_STARTED, "")
        return answer

    def _is_local(self, session_id: str) -> bool:
        return self.local is not None and session_id in self.local.views

    async def _close_session(self, close: mqtt_pb2.SessionClose) -> None:
        session = self.sessions.get(close.session_id)
        if session is None:
            raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_UNKNOWN_SESSION, f"session {close.session_id!r} is not open here")
        await session.close(close.reason or "closed by core")

    async def _on_session_closed(self, session: ViewerSession, reason: str) -> None:
        self.sessions.pop(session.session_id, None)
        self.relay_sessions.discard(session.session_id)
        self.status.sessions = len(self.sessions)
        await self._report_camera(session.camera_id)
        if self._is_local(session.session_id):
            assert self.local is not None
            self.local.view_ended(session.session_id, reason, session.duration_seconds,
                                  session.bytes_sent)
            return
        await self._publish_event(session, mqtt_pb2.SessionEvent.KIND_ENDED, reason)

    async def _publish_event(self, session: ViewerSession, kind: int, reason: str) -> None:
        event = mqtt_pb2.SessionEvent(
            session_id=session.session_id, camera_id=session.camera_id, kind=kind,  # type: ignore[arg-type]
            reason=reason, at=now_timestamp(), duration_seconds=session.duration_seconds,
            bytes_sent=session.bytes_sent,
        )
        try:
            await self.link.send(topics.route(Kind.SESSION_EVENTS, self.config.district_id),
                                 event.SerializeToString())
        except (LinkDown, RuntimeError) as exc:
            self._log.warning("session event not published", session=session.session_id, error=str(exc))

    # --- camera status ----------------------------------------------------------------------

    async def _on_feed_health(self, camera_id: str, health: FeedHealth) -> None:
        if health.state is FeedState.IDLE:
            self.prober.probe_soon(camera_id)  # its last pulled state goes stale from now on
        await self._report_camera(camera_id, health)

    async def _report_camera(self, camera_id: str, health: FeedHealth | None = None) -> None:
        feed = self.feeds[camera_id]
        if self.evidence is not None:
            self.evidence.viewers_changed(camera_id)  # pre-roll while someone watches
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
