"""The core as a running service: gRPC (with health and reflection) plus its MQTT link.

``CoreServer`` is an async context manager: entering opens the registry, connects to the broker,
starts serving; leaving stops serving (with a short grace period), disconnects, closes storage.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import Self

import aiomqtt
import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer  # what health.aio re-exports
from grpc_reflection.v1alpha import reflection

from cloud_core.access import AccessService
from cloud_core.audit import AuditLog, CheckpointSigner
from cloud_core.config import CoreConfig
from cloud_core.console import ConsoleServer
from cloud_core.dispatch_servicer import DispatchServicer
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
from cloud_core.signalling import MqttSignalling
from cloud_core.status_ingest import StatusIngest
from cloud_core.transport_security import add_listen_port
from protos import topics
from protos.safetynet.v1 import core_pb2, core_pb2_grpc
from runtime.background import BackgroundTasks
from runtime.mqtt_link import MqttLink

log = structlog.get_logger(__name__)

SERVICE_NAMES = tuple(service.full_name for service in core_pb2.DESCRIPTOR.services_by_name.values())


class CoreServer:
    def __init__(self, config: CoreConfig) -> None:
        self.config = config
        self.registry: Registry | None = None
        self.relay = MqttSignalling()
        self.port = 0
        self._link: MqttLink | None = None
        self._health = HealthServicer()
        self._ingest: StatusIngest | None = None
        self.broker: SessionBroker | None = None
        self.access: AccessService | None = None
        self.audit: AuditLog | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._changed = asyncio.Condition()
        self.console: ConsoleServer | None = None  # browser console + WHEP, when http_listen

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
                self.console = await stack.enter_async_context(ConsoleServer(access, self.config))
            self._stack = stack.pop_all()
        log.info("core serving", address=self.address, broker=self.config.broker.describe(),
                 database=str(self.config.database), audit=str(self.config.audit_database))
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
        """Registry, keys, incidents and the audit log: what access decisions stand on."""
        self.config.database.parent.mkdir(parents=True, exist_ok=True)
        self.registry = registry = Registry(self.config.database)
        stack.callback(registry.close)
        self._ingest = StatusIngest(registry)
        self.broker = SessionBroker(
            registry, self.relay,
            session_ttl=timedelta(seconds=self.config.session_ttl_seconds),
            answer_timeout=self.config.answer_timeout_seconds,
        )
        policy = load_policy(self.config.policy_file) if self.config.policy_file else Policy.default()
        key = load_or_create_signing_key(self.config.grant_key_path)
        signer = GrantSigner(key)
        write_public_key(self.config.grant_public_key_path, signer.public_key)
        incidents = IncidentStore(registry.db)
        if self.config.facilities_file is not None:
            incidents.load_facilities(self.config.facilities_file)
        self.audit = await stack.enter_async_context(
            AuditLog.open(self.config.audit_database, signer=CheckpointSigner(key)))
        self.access = AccessService(
            registry=registry, operators=OperatorStore(registry.db), incidents=incidents,
            policy=policy, signer=signer, audit=self.audit, sessions=self.broker)
        return self.access

    async def _connect(self, stack: contextlib.AsyncExitStack, access: AccessService) -> None:
        """The MQTT link (status in, signalling both ways) and the grant sweeper."""
        link = MqttLink(self.config.broker, client_id=self.config.client_id,
                        subscriptions=topics.CORE_ROUTES, on_message=self._on_message)
        self._link = await stack.enter_async_context(link)
        self.relay.attach(link)
        stack.callback(self.relay.attach, None)
        tasks = await stack.enter_async_context(BackgroundTasks("core"))
        tasks.start(self._sweep_forever(access), name="grant-sweeper")

    async def _serve_grpc(self, stack: contextlib.AsyncExitStack, access: AccessService) -> None:
        server = grpc.aio.server()
        core_pb2_grpc.add_CameraServiceServicer_to_server(CameraServicer(access), server)
        core_pb2_grpc.add_SessionServiceServicer_to_server(SessionServicer(access), server)
        core_pb2_grpc.add_IncidentServiceServicer_to_server(IncidentServicer(access), server)
        core_pb2_grpc.add_GrantServiceServicer_to_server(GrantServicer(access), server)
        core_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(access), server)
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

    async def _stop_grpc(self, server: grpc.aio.Server) -> None:
        await self._health.enter_graceful_shutdown()
        await server.stop(grace=1.0)

    def _forget_parts(self) -> None:
        self.console = None
        self._link = None
        self.audit = None
        self.registry = None

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await self.link.wait_connected(timeout)

    async def _sweep_forever(self, access: AccessService) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_seconds)
            try:
                await access.sweep()
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
        if topic.kind == topics.Kind.SIGNAL_RESPONSE:
            self.relay.handle_response(topic.district, bytes(payload))
        elif topic.kind == topics.Kind.SESSION_EVENTS:
            assert self.broker is not None and self.access is not None
            event = self.broker.handle_event(topic.district, bytes(payload))
            if event is not None:
                await self.access.session_ended(event)
        else:
            assert self._ingest is not None
            self._ingest.handle(topic, bytes(payload))


async def run_core(config: CoreConfig, stop: asyncio.Event) -> None:
    async with CoreServer(config):
        await stop.wait()
