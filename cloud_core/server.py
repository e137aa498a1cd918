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

from cloud_core.config import CoreConfig
from cloud_core.registry import Registry
from cloud_core.servicer import CameraServicer, SessionServicer
from cloud_core.sessions import SessionBroker
from cloud_core.signalling import SignallingRelay
from cloud_core.status_ingest import StatusIngest
from protos import topics
from protos.safetynet.v1 import core_pb2, core_pb2_grpc
from safetynet.mqtt_link import MqttLink

log = structlog.get_logger(__name__)

SERVICE_NAMES = (
    core_pb2.DESCRIPTOR.services_by_name["CameraService"].full_name,
    core_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name,
)


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
        self._changed = asyncio.Condition()

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
        self._link = MqttLink(self.config.broker, client_id=self.config.client_id,
                              subscriptions=topics.CORE_SUBSCRIPTIONS, on_message=self._on_message)
        self.relay.attach(self._link)
        await self._link.__aenter__()

        server = grpc.aio.server()
        core_pb2_grpc.add_CameraServiceServicer_to_server(CameraServicer(self.registry), server)
        core_pb2_grpc.add_SessionServiceServicer_to_server(SessionServicer(self.broker), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        self.port = server.add_insecure_port(self.config.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.config.listen}")
        await server.start()
        self._server = server
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("core serving", address=self.address, broker=self.config.broker.describe(),
                 database=str(self.config.database))
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop serving, disconnect, close the registry; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            await self._health.enter_graceful_shutdown()
            await server.stop(grace=1.0)
        link, self._link = self._link, None
        if link is not None:
            await link.close()
        registry, self.registry = self.registry, None
        if registry is not None:
            registry.close()

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await self.link.wait_connected(timeout)

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
            assert self.broker is not None
            self.broker.handle_event(topic.district, bytes(payload))
        else:
            assert self._ingest is not None
            self._ingest.handle(topic, bytes(payload))


async def run_core(config: CoreConfig, stop: asyncio.Event) -> None:
    async with CoreServer(config):
        await stop.wait()
