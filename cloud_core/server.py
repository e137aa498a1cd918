"""The core as a running service: gRPC (with health and reflection) plus its MQTT link.

``CoreServer`` is an async context manager: entering opens the registry, connects to the broker,
starts serving; leaving stops serving (with a short grace period), disconnects, closes storage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType

import aiomqtt
import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cloud_core.access import AccessService
from cloud_core.audit import AuditLog, CheckpointSigner
from cloud_core.config import CoreConfig
from cloud_core.console import ConsoleServer
from cloud_core.evidence import EvidenceCustody
from cloud_core.evidence_servicer import EvidenceServicer
from cloud_core.grants import GrantSigner, load_or_create_signing_key, write_public_key
from cloud_core.incidents import IncidentStore
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
from cloud_core.status_ingest import StatusIngest
from cloud_core.transport_security import add_listen_port
from protos import topics
from protos.safetynet.v1 import core_pb2, core_pb2_grpc
from runtime.mqtt_link import MqttLink

log = structlog.get_logger(__name__)

SERVICE_NAMES = tuple(service.full_name for service in core_pb2.DESCRIPTOR.services_by_name.values())


class CoreServer:
    def __init__(self, config: CoreConfig) -> None:
        self.config = config
        self.registry: Registry | None = None
        self.relay = SignallingRelay()
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._link: MqttLink | None = None
        self._health = health.aio.HealthServicer()
        self._ingest: StatusIngest | None = None
        self.broker: SessionBroker | None = None
        self.access: AccessService | None = None
        self.audit: AuditLog | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self.console: ConsoleServer | None = None  # browser console + WHEP, when http_listen
        self.evidence: EvidenceCustody | None = None

    @property
    def address(self) -> str:
        host = self.config.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    @property
    def link(self) -> MqttLink:
        assert self._link is not None
        return self._link

    async def __aenter__(self) -> CoreServer:
        self.config.database.parent.mkdir(parents=True, exist_ok=True)
        self.registry = Registry(self.config.database)
        self._ingest = StatusIngest(self.registry)
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
        self.evidence = EvidenceCustody(self.access, self.relay, self.registry.db,
                                        timeout=self.config.answer_timeout_seconds)
        self._link = MqttLink(self.config.broker, client_id=self.config.client_id,
                              subscriptions=topics.CORE_SUBSCRIPTIONS, on_message=self._on_message)
        self.relay.attach(self._link)
        await self._link.__aenter__()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="grant-sweeper")

        server = grpc.aio.server()
        access = self.access
        core_pb2_grpc.add_CameraServiceServicer_to_server(CameraServicer(access), server)
        core_pb2_grpc.add_SessionServiceServicer_to_server(SessionServicer(access), server)
        core_pb2_grpc.add_IncidentServiceServicer_to_server(IncidentServicer(access), server)
        core_pb2_grpc.add_GrantServiceServicer_to_server(GrantServicer(access), server)
        core_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(access), server)
        core_pb2_grpc.add_EvidenceServiceServicer_to_server(
            EvidenceServicer(access, self.evidence), server)
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
            self.console = ConsoleServer(access, self.config)
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
        audit, self.audit = self.audit, None
        if audit is not None:
            await audit.close()
        registry, self.registry = self.registry, None
        if registry is not None:
            registry.close()

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

    async def _on_message(self, message: aiomqtt.Message) -> None:
        try:
            await self._handle(message)
        finally:
            async with self._changed:
                self._changed.notify_all()

    async def _handle(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            log.warning("rejected mqtt message: payload is not bytes", topic=str(message.topic))
            return
        try:
            topic = topics.parse(str(message.topic))
        except ValueError as exc:
            log.warning("ignored message on unexpected topic", error=str(exc))
            return
        if topic.kind == "signal_response":
            self.relay.handle_response(topic.district, bytes(payload))
        elif topic.kind == "session_events":
            assert self.broker is not None and self.access is not None
            event = self.broker.handle_event(topic.district, bytes(payload))
            if event is not None:
                await self.access.session_ended(event)
        elif topic.kind == "evidence_events":
            assert self.evidence is not None
            await self.evidence.on_event(topic.district, bytes(payload))
        else:
            assert self._ingest is not None
            self._ingest.handle(topic, bytes(payload))


async def run_core(config: CoreConfig, stop: asyncio.Event) -> None:
    async with CoreServer(config):
        await stop.wait()
