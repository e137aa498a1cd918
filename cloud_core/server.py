"""The core as a running service: gRPC (with health and reflection) plus its MQTT link.

``CoreServer`` is an async context manager: entering opens the registry, connects to the broker,
starts serving; leaving stops serving (with a short grace period), disconnects, writes what status
it still holds, closes storage. Status is written by ``StatusIngest``'s writer thread; each commit
moves the consoles' ``CameraFeed``. ``LoopMonitor`` measures the event loop's lag all along.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import Self

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cloud_core.access import AccessService
from cloud_core.audit import AuditLog, CheckpointSigner
from cloud_core.broker_link import BrokerLink
from cloud_core.camera_feed import CameraFeed
from cloud_core.config import CoreConfig
from cloud_core.console import ConsoleServer
from cloud_core.grants import GrantSigner, load_or_create_signing_key, write_public_key
from cloud_core.incidents import IncidentStore
from cloud_core.loop_monitor import LoopMonitor
from cloud_core.metrics import CoreMetrics, GrpcTimer
from cloud_core.operators import OperatorStore
from cloud_core.policy import Policy, load_policy
from cloud_core.registry import Registry
from cloud_core.servicer import (
    AuditServicer,
    CameraServicer,
    GrantServicer,
    IncidentServicer,
    SessionServicer,
)
from cloud_core.sessions import SessionBroker
from cloud_core.signalling import SignallingRelay
from cloud_core.status_ingest import INGESTED_KINDS, StatusIngest
from cloud_core.transport_security import add_listen_port
from protos import topics
from protos.safetynet.v1 import core_pb2, core_pb2_grpc

log = structlog.get_logger(__name__)

SERVICE_NAMES = tuple(service.full_name for service in core_pb2.DESCRIPTOR.services_by_name.values())


# Statuses at QoS 0 towards the core, the rest at QoS 1. With a clean session QoS 1 would redeliver
# nothing across a reconnect (retained statuses are replayed on subscribing anyway) and TCP
# already delivers in order on a live connection; what QoS 1 adds there is a PUBACK per status,
# the core's largest cost in a 68,000-status burst, and Mosquitto's in-flight window pacing it.
# Mosquitto queues QoS 0 for an online client up to max_queued_messages like QoS 1
# (safetynet/broker.py, provisioning/broker_config.py size it for the city).
SUBSCRIPTIONS = tuple((t, 0 if t.endswith(("/status", "/heartbeat")) else 1)
                      for t in topics.CORE_SUBSCRIPTIONS)


class CoreServer:
    def __init__(self, config: CoreConfig) -> None:
        self.config = config
        self.registry: Registry | None = None
        self.relay = SignallingRelay()
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._link: BrokerLink | None = None
        self._health = health.aio.HealthServicer()
        self._ingest: StatusIngest | None = None
        self.broker: SessionBroker | None = None
        self.access: AccessService | None = None
        self.audit: AuditLog | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self.console: ConsoleServer | None = None  # browser console + WHEP, when http_listen
        self.metrics = CoreMetrics()
        self.feed: CameraFeed | None = None
        self.loop_monitor = LoopMonitor(self.metrics)

    @property
    def ingest(self) -> StatusIngest:
        assert self._ingest is not None
        return self._ingest

    @property
    def address(self) -> str:
        host = self.config.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    @property
    def link(self) -> BrokerLink:
        assert self._link is not None
        return self._link

    async def __aenter__(self) -> Self:
        self.config.database.parent.mkdir(parents=True, exist_ok=True)
        self.registry = Registry(self.config.database)
        await self.loop_monitor.__aenter__()
        self.metrics.watch_registry(self.registry.cameras_by_state, self.registry.count_open_sessions)
        self.feed = await CameraFeed(self.registry).__aenter__()
        self._ingest = await StatusIngest(self.registry, metrics=self.metrics,
                                          on_commit=self._committed).__aenter__()
        self.broker = SessionBroker(
            self.registry, self.relay,
            session_ttl=timedelta(seconds=self.config.session_ttl_seconds),
            answer_timeout=self.config.answer_timeout_seconds,
        )
        policy = load_policy(self.config.policy_file) if self.config.policy_file else Policy.default()
        key = load_or_create_signing_key(self.config.grant_key_path)
        signer = GrantSigner(key)
        write_public_key(self.config.grant_public_key_path, signer.public_key)
        incidents = IncidentStore(self.registry.db)
        if self.config.facilities_file is not None:
            incidents.load_facilities(self.config.facilities_file)
        self.audit = AuditLog.open(self.config.audit_database, signer=CheckpointSigner(key))
        await self.audit.__aenter__()
        self.access = AccessService(
            registry=self.registry, operators=OperatorStore(self.registry.db), incidents=incidents,
            policy=policy, signer=signer, audit=self.audit, sessions=self.broker)
        self._link = BrokerLink(self.config.broker, client_id=self.config.client_id,
                                subscriptions=SUBSCRIPTIONS,
                                on_status=self._on_status, on_message=self._on_message,
                                on_dropped=self._dropped)
        self.relay.attach(self._link)
        await self._link.__aenter__()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="grant-sweeper")

        server = grpc.aio.server(interceptors=[GrpcTimer(self.metrics)])
        access = self.access
        core_pb2_grpc.add_CameraServiceServicer_to_server(CameraServicer(access), server)
        core_pb2_grpc.add_SessionServiceServicer_to_server(SessionServicer(access), server)
        core_pb2_grpc.add_IncidentServiceServicer_to_server(IncidentServicer(access), server)
        core_pb2_grpc.add_GrantServiceServicer_to_server(GrantServicer(access), server)
        core_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(access), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        self.port = add_listen_port(server, self.config)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.config.listen}")
        await server.start()
        self._server = server
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.config.http_listen:
            self.console = ConsoleServer(access, self.config, feed=self.feed, metrics=self.metrics)
            try:
                await self.console.__aenter__()
            except BaseException:
                await self.close()
                raise
        log.info("core serving", address=self.address, broker=self.config.broker.describe(),
                 database=str(self.config.database), audit=str(self.config.audit_database))
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop serving, disconnect, close the registry; idempotent."""
        console, self.console = self.console, None
        if console is not None:
            await console.close()
        server, self._server = self._server, None
        if server is not None:
            await self._health.enter_graceful_shutdown()
            await server.stop(grace=1.0)
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
        link, self._link = self._link, None
        if link is not None:
            await link.close()
        await self._close_status()
        audit, self.audit = self.audit, None
        if audit is not None:
            await audit.close()
        registry, self.registry = self.registry, None
        if registry is not None:
            registry.close()

    async def _close_status(self) -> None:
        ingest, self._ingest = self._ingest, None
        if ingest is not None:
            try:
                await ingest.drained(timeout=5.0)
            except TimeoutError:
                log.warning("status ingest did not drain before shutdown", pending=ingest.pending)
            await ingest.close()
        feed, self.feed = self.feed, None
        if feed is not None:
            await feed.close()
        await self.loop_monitor.close()

    async def _committed(self, version: int) -> None:
        if self.feed is not None:
            self.feed.notify(version)
        async with self._changed:
            self._changed.notify_all()

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await self.link.wait_connected(timeout)

    async def _sweep_forever(self) -> None:
        assert self.access is not None
        while True:
            await asyncio.sleep(self.config.sweep_seconds)
            try:
                await self.access.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The sweeper must keep running: a failed pass is retried on the next tick.
                log.exception("grant sweep failed")

    async def wait_until(self, predicate: Callable[[Registry], bool], timeout: float) -> None:
        """Wait until ``predicate(registry)`` holds; re-checked after every MQTT message."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self.registry))  # type: ignore[arg-type]

    def _on_status(self, topic_name: str, payload: bytes) -> bool:
        """As a message is read: stage a status (True); anything else goes on (False)."""
        try:
            topic = topics.parse(topic_name)
        except ValueError as exc:
            log.warning("ignored message on unexpected topic", error=str(exc))
            return True
        if topic.kind not in INGESTED_KINDS:
            return False
        ingest = self._ingest
        if ingest is not None:
            ingest.submit(topic, topic_name, payload)
        return True

    def _dropped(self, topic_name: str) -> None:
        self.metrics.messages_dropped.labels(reason="core_queue_full").inc()

    async def _on_message(self, topic_name: str, payload: bytes) -> None:
        """Signalling and session events, in arrival order."""
        try:
            topic = topics.parse(topic_name)
            if topic.kind == "signal_response":
                self.relay.handle_response(topic.district, payload)
            elif topic.kind == "session_events":
                assert self.broker is not None and self.access is not None
                event = self.broker.handle_event(topic.district, payload)
                if event is not None:
                    await self.access.session_ended(event)
        finally:
            async with self._changed:
                self._changed.notify_all()


async def run_core(config: CoreConfig, stop: asyncio.Event) -> None:
    async with CoreServer(config):
        # What exists now lives as long as the process: out of the collector's way, so a full
        # collection during a burst walks only what the burst made (it took ~270 ms otherwise).
        gc.freeze()
        await stop.wait()
