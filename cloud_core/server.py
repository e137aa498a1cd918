"""The core as a running service: gRPC (with health and reflection) plus its MQTT link.

``CoreServer`` is an async context manager: entering opens the registry, connects to the broker,
starts serving; leaving stops serving (with a short grace period), disconnects, closes storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

import aiomqtt
import grpc
import structlog
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer  # what health.aio re-exports
from grpc_reflection.v1alpha import reflection

from cloud_core.access import AccessService
from cloud_core.access.recorder import AuditRecorder
from cloud_core.audit import AuditLog, AuditLogConfig, CheckpointSigner
from cloud_core.audit.witness import CheckpointWitnesses
from cloud_core.camera_feed import CameraFeed
from cloud_core.config import CoreConfig
from cloud_core.console import ConsoleServer
from cloud_core.dispatch_servicer import DispatchServicer
from cloud_core.evidence import EvidenceCustody
from cloud_core.evidence_servicer import EvidenceServicer
from cloud_core.exceptions import AuditError
from cloud_core.grants import GrantSigner, load_or_create_signing_key, write_public_key
from cloud_core.incidents import IncidentStore
from cloud_core.journal_intake import JournalIntake
from cloud_core.loop_monitor import LoopMonitor
from cloud_core.metrics import CoreMetrics, GrpcTimer
from cloud_core.operators import OperatorStore
from cloud_core.policy import Policy, load_policy
from cloud_core.registry import Registry
from cloud_core.relays import RelayDesk, load_relay_keys
from cloud_core.servicer import (
    AuditServicer,
    CameraServicer,
    GrantServicer,
    IncidentServicer,
    SessionServicer,
)
from cloud_core.sessions import SessionBroker
from cloud_core.signalling import MqttSignalling
from cloud_core.status_ingest import INGESTED_KINDS, StatusIngest
from cloud_core.storage.base import describe, is_postgres
from cloud_core.storage.leader import Leadership, open_leadership
from cloud_core.transport_security import add_listen_port
from protos import topics
from protos.safetynet.v1 import core_pb2, core_pb2_grpc, mqtt_pb2
from runtime.background import BackgroundTasks
from runtime.exceptions import LinkDown
from runtime.mqtt_link import LastWill, MqttLink
from runtime.standby_link import SignalPair

log = structlog.get_logger(__name__)

SERVICE_NAMES = tuple(service.full_name for service in core_pb2.DESCRIPTOR.services_by_name.values())

# Statuses at QoS 0 towards the core, the rest as the contract says. With a clean session QoS 1
# would redeliver nothing across a reconnect (retained statuses are replayed on subscribing) and
# TCP already delivers in order; what QoS 1 adds is a PUBACK per status, the core's largest cost
# in a 68,000-status burst, and Mosquitto's in-flight window pacing it. Mosquitto queues QoS 0
# for an online client up to max_queued_messages like QoS 1 (broker_config.CITY_QUEUE_LIMITS).
SUBSCRIPTIONS = tuple(dataclasses.replace(r, qos=0) if r.kind in INGESTED_KINDS else r
                      for r in topics.CORE_ROUTES)
STANDBY_KINDS = (topics.Kind.SIGNAL_RESPONSE, topics.Kind.AGENT_STATUS)
"""What a core replica's standby link takes (``runtime.standby_link``), at QoS 0."""


class CoreServer:
    def __init__(self, config: CoreConfig) -> None:
        self.config = config
        self.registry: Registry | None = None
        self.relay = MqttSignalling()
        self.port = 0
        self._link: MqttLink | None = None
        self._health = HealthServicer()
        self._ingest: StatusIngest | None = None
        self._reachability: asyncio.Future[None] | None = None  # the latest one being written
        self.broker: SessionBroker | None = None
        self.access: AccessService | None = None
        self.audit: AuditLog | None = None
        self.witnesses: CheckpointWitnesses | None = None
        self.leadership: Leadership | None = None  # who signs checkpoints of a shared chain
        self._stack: contextlib.AsyncExitStack | None = None
        self._changed = asyncio.Condition()
        self.console: ConsoleServer | None = None  # browser console + WHEP, when http_listen
        self.evidence: EvidenceCustody | None = None
        self.journal: JournalIntake | None = None  # agents' local journals (docs/local-mode.md)
        self.metrics = CoreMetrics()
        self.feed: CameraFeed | None = None  # camera changes pushed to consoles
        self.loop_monitor = LoopMonitor(self.metrics)
        self.relays: RelayDesk | None = None  # cloud relays, when [relays] names some

    @property
    def ingest(self) -> StatusIngest:
        assert self._ingest is not None
        return self._ingest

    @property
    def address(self) -> str:
        host = self.config.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    @property
    def link(self) -> MqttLink:
        assert self._link is not None
        return self._link

    async def __aenter__(self) -> Self:
        """Start every part in order; if one fails, stop those already started, in reverse."""
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(self._forget_parts)
            access = await self._open_storage(stack)
            await self._connect(stack, access)
            await self._serve_grpc(stack, access)
            if self.config.http_listen:
                self.console = await stack.enter_async_context(
                    ConsoleServer(access, self.config, feed=self.feed, metrics=self.metrics,
                                  evidence=self.evidence))
            self._stack = stack.pop_all()
        log.info("core serving", address=self.address, broker=self.config.broker.describe(),
                 database=self.registry.location if self.registry else "",
                 audit=describe(self.config.audit_location))
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the console, serving, the sweeper; disconnect; close storage; idempotent."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def _open_storage(self, stack: contextlib.AsyncExitStack) -> AccessService:
        """Registry, keys, incidents and the audit log: what access decisions stand on. The
        registry's database (``[storage]``'s PostgreSQL, else the SQLite file) holds the other
        stores' tables too."""
        self.config.database.parent.mkdir(parents=True, exist_ok=True)
        storage = self.config.storage
        self.registry = registry = Registry(
            storage.url if storage is not None else self.config.database)
        stack.callback(registry.close)
        await stack.enter_async_context(self.loop_monitor)
        self.metrics.watch_registry(registry.cameras_by_state, registry.count_open_sessions)
        self.feed = await stack.enter_async_context(CameraFeed(registry))
        self._ingest = await stack.enter_async_context(
            StatusIngest(registry, metrics=self.metrics, on_commit=self._committed))
        self.broker = SessionBroker(
            registry, self.relay,
            session_ttl=timedelta(seconds=self.config.session_ttl_seconds),
            answer_timeout=self.config.answer_timeout_seconds, turn=self.config.turn,
        )
        policy = load_policy(self.config.policy_file) if self.config.policy_file else Policy.default()
        key = load_or_create_signing_key(self.config.grant_key_path)
        signer = GrantSigner(key)
        write_public_key(self.config.grant_public_key_path, signer.public_key)
        incidents = IncidentStore(registry.db)
        if self.config.facilities_file is not None:
            incidents.load_facilities(self.config.facilities_file)
        checkpoints = CheckpointSigner.from_key_file(
            self.config.checkpoint_key_path, create=self.config.checkpoint_key_file is None)
        write_public_key(self.config.checkpoint_public_key_path, checkpoints.public_key)
        self.witnesses = CheckpointWitnesses(
            self.config.audit_witness_files,
            lambda: (d.district_id for d in registry.districts()))
        self.leadership = leader = await stack.enter_async_context(
            open_leadership(self.config.audit_location))
        self.metrics.watch_leadership(lambda: leader.is_leader)
        self.audit = await stack.enter_async_context(
            AuditLog.open(self.config.audit_location, signer=checkpoints,
                          on_checkpoint=self.witnesses.offer,
                          may_checkpoint=lambda: leader.is_leader))
        if self.config.relay_keys:
            self.relays = RelayDesk(
                keys=load_relay_keys(self.config.relay_keys), signalling=self.relay,
                sessions=self.broker, signer=signer, registry=registry, incidents=incidents,
                record=AuditRecorder(self.audit).record,
                timeout=self.config.answer_timeout_seconds)
        self.access = AccessService(
            registry=registry, operators=OperatorStore(registry.db), incidents=incidents,
            policy=policy, signer=signer, audit=self.audit, sessions=self.broker,
            relays=self.relays)
        if self.relays is not None:
            self.relays.on_session_ended = self.access.session_ended
        self.metrics.watch_access(self.access)
        self.evidence = EvidenceCustody(self.access, self.relay, registry.db,
                                        timeout=self.config.answer_timeout_seconds)
        return self.access

    async def _connect(self, stack: contextlib.AsyncExitStack, access: AccessService) -> None:
        """The MQTT link (status in, signalling both ways) and the grant sweeper."""
        assert self.witnesses is not None and self.audit is not None
        subscriptions = SUBSCRIPTIONS + (topics.CORE_RELAY_ROUTES if self.relays else ())
        link = MqttLink(self.config.broker, client_id=self.config.client_id,
                        subscriptions=subscriptions, on_message=self._on_message,
                        on_connect=self._link_up,
                        will=LastWill(self._status_route, _core_status(online=False)))
        self._link = await stack.enter_async_context(link)
        stack.push_async_callback(self._say_offline)
        self.relay.attach(SignalPair(link, await self._standby(stack)))
        stack.callback(self.relay.attach, None)
        self.witnesses.attach(link)
        stack.push_async_callback(self._final_checkpoint)
        assert self.audit is not None
        self.journal = await stack.enter_async_context(JournalIntake(
            self.relay, self.audit, access.policy, timeout=self.config.answer_timeout_seconds))
        tasks = await stack.enter_async_context(BackgroundTasks("core"))
        tasks.start(self._sweep_forever(access), name="grant-sweeper")
        tasks.start(self.witnesses.run(), name="checkpoint-witnesses")
        if is_postgres(self.config.audit_location):
            tasks.start(self._checkpoint_as_leader(), name="leader-checkpoints")

    async def _standby(self, stack: contextlib.AsyncExitStack) -> MqttLink | None:
        """On a clustered broker, a second connection on another node (``runtime.standby_link``)
        for the agents' answers and their own status: new sessions need not wait for this
        replica to reconnect after its node's loss, and a district's agent that stops meanwhile
        is seen to. None on one broker."""
        settings = self.config.broker.standby_settings()
        if settings is None:
            return None
        routes = [topics.route(kind, topics.ANY) for kind in STANDBY_KINDS]
        if self.relays:
            routes.append(topics.relay_route(topics.Kind.SIGNAL_RESPONSE, topics.ANY))
        standby = MqttLink(settings, client_id=f"{self.config.client_id}-standby",
                           subscriptions=[dataclasses.replace(r, qos=0) for r in routes],
                           on_message=self._on_standby_message)
        return await stack.enter_async_context(standby)

    async def _on_standby_message(self, message: aiomqtt.Message) -> None:
        """What came on the standby link, handled as on the main one (where its copy is
        dropped: an answer by its request id, a status by the ingest's ordering)."""
        topic = str(message.topic)
        if topic.startswith(topics.RELAY_PREFIX):
            relay = None
            with contextlib.suppress(ValueError):
                relay = topics.parse_relay(topic)
            if relay is None or relay[0] is not topics.Kind.SIGNAL_RESPONSE:
                return
        else:
            try:
                if topics.parse(topic).kind not in STANDBY_KINDS:
                    return
            except ValueError:
                return  # the main link logs what it does not expect
        await self._on_message(message)

    async def _final_checkpoint(self) -> None:
        """On a clean stop, sign the head and hand it to the agents while the link is up."""
        assert self.witnesses is not None and self.audit is not None
        try:
            await self.audit.checkpoint()
        except AuditError as exc:
            log.error("final audit checkpoint failed", error=str(exc))
        await self.witnesses.publish_latest()
        self.witnesses.attach(None)

    async def _serve_grpc(self, stack: contextlib.AsyncExitStack, access: AccessService) -> None:
        server = grpc.aio.server(interceptors=[GrpcTimer(self.metrics)])
        core_pb2_grpc.add_CameraServiceServicer_to_server(CameraServicer(access), server)
        core_pb2_grpc.add_SessionServiceServicer_to_server(SessionServicer(access), server)
        core_pb2_grpc.add_IncidentServiceServicer_to_server(IncidentServicer(access), server)
        core_pb2_grpc.add_GrantServiceServicer_to_server(GrantServicer(access), server)
        core_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(access), server)
        assert self.evidence is not None
        core_pb2_grpc.add_EvidenceServiceServicer_to_server(
            EvidenceServicer(access, self.evidence), server)
        core_pb2_grpc.add_DispatchServiceServicer_to_server(DispatchServicer(access), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        stack.push_async_callback(self._stop_grpc, server)
        try:
            self.port = add_listen_port(server, self.config)
        except RuntimeError as exc:  # grpc's "Failed to bind to address"
            raise OSError(f"cannot listen on {self.config.listen}: {exc}") from exc
        if self.port == 0:
            raise OSError(f"cannot listen on {self.config.listen}: the address is in use or "
                          "not available")
        await server.start()
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def _link_up(self) -> None:
        """After each (re)connect: say the core is up, and send the newest checkpoint again."""
        await self._say_online()
        if self.witnesses is not None:
            await self.witnesses.link_up()

    @property
    def _status_route(self) -> topics.Route:
        """This replica's own retained status (its MQTT client id names it)."""
        return topics.core_status_route(self.config.client_id)

    async def _say_online(self) -> None:
        """After each (re)connect: agents may stop serving locally (retained; will = offline)."""
        await self.link.send(self._status_route, _core_status(online=True))

    async def _say_offline(self) -> None:
        with contextlib.suppress(LinkDown):  # then the broker's last will says it for us
            await self.link.send(self._status_route, _core_status(online=False))

    async def _stop_grpc(self, server: grpc.aio.Server) -> None:
        await self._health.enter_graceful_shutdown()
        await server.stop(grace=1.0)

    def _forget_parts(self) -> None:
        self.console = None
        self.relays = None
        self.evidence = None
        self.journal = None
        self._link = None
        self.audit = None
        self.leadership = None
        self.registry = None

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await self.link.wait_connected(timeout)

    async def _sweep_forever(self, access: AccessService) -> None:
        """Every ``sweep_seconds``: end what no grant allows any more. Only the leader sweeps
        (several replicas would each close the same session and record it twice); another
        replica takes over within seconds of the leader's death (``storage.leader``)."""
        while True:
            await asyncio.sleep(self.config.sweep_seconds)
            self._note_broker_reachability()
            if self.leadership is not None and not self.leadership.is_leader:
                continue
            try:
                await access.sweep()
                await self._mark_silent_agents()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The sweeper must keep running: a failed pass is retried on the next tick.
                log.exception("grant sweep failed")

    async def _mark_silent_agents(self) -> None:
        """An agent not heard from for ``agent_silence_seconds`` is offline: its node may have
        died with it, and its last will with the node (a cluster keeps a will on the node the
        agent is connected to). Only once this core has held its broker link that long itself:
        right after a (re)connect the retained statuses are still arriving."""
        silence = self.config.agent_silence_seconds
        if not silence or self.registry is None or self._link is None \
                or self._link.up_for() < silence:
            return
        silent, version = self.registry.mark_silent_agents(
            datetime.now(UTC) - timedelta(seconds=silence))
        for district_id in silent:
            log.warning("agent silent: taken for offline", district=district_id,
                        silent_for_s=silence)
        if silent:
            await self._committed(version)

    def _note_broker_reachability(self) -> None:
        """Every camera shows ``unknown`` while the core cannot reach the broker."""
        if self.registry is None or self._link is None:
            return
        reachable = self._link.connected.is_set()
        if reachable != self.registry.broker_reachable:
            log.warning("broker reachability changed", reachable=reachable)
            self.registry.broker_reachable = reachable
            if self._ingest is not None:
                self._reachability = asyncio.ensure_future(
                    self._ingest.broker_reachability(reachable))

    async def _checkpoint_as_leader(self) -> None:
        """On a shared chain the leader signs the head every interval, whoever appended."""
        while True:
            await asyncio.sleep(AuditLogConfig().checkpoint_interval)
            if self.leadership is not None and self.leadership.is_leader and self.audit:
                try:
                    await self.audit.checkpoint()
                except AuditError as exc:
                    log.warning("leader checkpoint failed", error=str(exc))

    async def wait_until(self, predicate: Callable[[Registry], bool], timeout: float) -> None:
        """Wait until ``predicate(registry)`` holds; re-checked after every MQTT message."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self.registry))  # type: ignore[arg-type]

    async def _on_message(self, message: aiomqtt.Message) -> None:
        staged = False
        try:
            staged = await self._handle(message)
        finally:
            if not staged:  # a staged status wakes waiters once its batch is written
                async with self._changed:
                    self._changed.notify_all()

    async def _handle(self, message: aiomqtt.Message) -> bool:
        """Act on one message; True when it was a status staged for the ingest's writer."""
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            log.warning("rejected mqtt message: payload is not bytes", topic=str(message.topic))
            return False
        if self.relays is not None and str(message.topic).startswith(topics.RELAY_PREFIX):
            await self._handle_relay(str(message.topic), bytes(payload))
            return False
        try:
            topic = topics.parse(str(message.topic))
        except ValueError as exc:
            log.warning("ignored message on unexpected topic", error=str(exc))
            return False
        if topic.kind == topics.Kind.SIGNAL_RESPONSE:
            self.relay.handle_response(topic.district, bytes(payload))
        elif topic.kind == topics.Kind.SESSION_EVENTS:
            assert self.broker is not None and self.access is not None
            event = self.broker.handle_event(topic.district, bytes(payload))
            if event is not None:
                await self.access.session_ended(event)
        elif topic.kind == topics.Kind.EVIDENCE_EVENTS:
            assert self.evidence is not None
            await self.evidence.on_event(topic.district, bytes(payload))
        else:
            assert self._ingest is not None
            # Staged for the writer thread; _committed follows up once it is in the registry.
            self._ingest.submit(topic, str(message.topic), bytes(payload))
            self._nudge_journal(topic, bytes(payload))
            return True
        return False

    async def _handle_relay(self, topic: str, payload: bytes) -> None:
        assert self.relays is not None
        try:
            parsed = topics.parse_relay(topic)
        except ValueError as exc:
            log.warning("ignored message on unexpected topic", error=str(exc))
            return
        if parsed is not None:
            await self.relays.handle(parsed[0], parsed[1], payload)

    async def _committed(self, version: int) -> None:
        """A status batch is in the registry: push it to consoles, end a gone agent's sessions."""
        if self.feed is not None:
            self.feed.notify(version)
        if self.access is not None and self.registry is not None:
            for district_id in {str(r["district_id"]) for r in self.registry.open_sessions()}:
                await self.access.agent_status_changed(district_id)
        async with self._changed:
            self._changed.notify_all()

    def _nudge_journal(self, topic: topics.ParsedTopic, payload: bytes) -> None:
        """An agent that is back, or whose journal is ahead of the chain, gets its journal pulled."""
        if self.journal is None:
            return
        try:
            if topic.kind == topics.Kind.AGENT_STATUS:
                status = mqtt_pb2.AgentStatus.FromString(payload)
                if status.state == mqtt_pb2.AGENT_STATE_ONLINE:
                    self.journal.nudge(topic.district)
            elif topic.kind == topics.Kind.HEARTBEAT:
                beat = mqtt_pb2.Heartbeat.FromString(payload)
                self.journal.nudge(topic.district, beat.journal_seq)
        except DecodeError:
            return  # the ingest has logged and counted it


def _core_status(*, online: bool) -> bytes:
    status = mqtt_pb2.CoreStatus(online=online)
    status.changed_at.GetCurrentTime()
    return status.SerializeToString()


async def run_core(config: CoreConfig, stop: asyncio.Event) -> None:
    async with CoreServer(config):
        # What exists now lives as long as the process: out of the collector's way, so a full
        # collection during a status burst walks only what the burst made.
        gc.freeze()
        await stop.wait()
