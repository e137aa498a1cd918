"""One MQTT connection that keeps itself up.

``MqttLink`` wraps an ``aiomqtt.Client``: it connects, (re)subscribes, runs the caller's
``on_connect`` (to publish state that must be current after every reconnect), hands each message
to ``on_message``, and when the broker goes away it reconnects with capped, jittered backoff.
aiomqtt errors stop here: callers see ``LinkDown``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiomqtt
import structlog

from protos.topics import Route
from runtime.exceptions import LinkDown

log = structlog.get_logger(__name__)

MessageHandler = Callable[[aiomqtt.Message], Awaitable[None]]
ConnectHandler = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class BrokerSettings:
    """Where the broker is and how to prove who we are. TLS when ``ca_file`` is set."""

    host: str = "127.0.0.1"
    port: int = 1883
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    keepalive: int = 15

    @property
    def uses_tls(self) -> bool:
        return self.ca_file is not None

    def describe(self) -> str:
        return f"{'mqtts' if self.uses_tls else 'mqtt'}://{self.host}:{self.port}"

    def tls_context(self) -> ssl.SSLContext | None:
        """A context that trusts only the configured CA (never the system store)."""
        if self.ca_file is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None:
            context.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
        return context

    @classmethod
    def from_mapping(cls, data: dict[str, Any], base: Path) -> BrokerSettings:
        """From a TOML ``[broker]`` table; relative file paths are taken from ``base``."""
        unknown = set(data) - {"host", "port", "ca_file", "cert_file", "key_file", "username",
                               "password", "keepalive"}
        if unknown:
            raise ValueError(f"unknown broker setting(s): {', '.join(sorted(unknown))}")

        def path(key: str) -> Path | None:
            value = data.get(key)
            if value is None:
                return None
            if not isinstance(value, str):
                raise ValueError(f"broker.{key} must be a file path")
            return (base / value).resolve()

        port = data.get("port", 1883)
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"broker.port must be a port number, got {port!r}")
        host = data.get("host", "127.0.0.1")
        if not isinstance(host, str) or not host:
            raise ValueError("broker.host must be a host name or address")
        return cls(host=host, port=port, ca_file=path("ca_file"), cert_file=path("cert_file"),
                   key_file=path("key_file"), username=data.get("username"),
                   password=data.get("password"), keepalive=int(data.get("keepalive", 15)))


@dataclass(frozen=True)
class LastWill:
    """What the broker publishes for us when our connection is lost: ``payload`` on ``route``."""

    route: Route
    payload: bytes


class MqttLink:
    """A self-healing MQTT connection; an async context manager owning one background task.

    ``subscriptions`` are routes (``protos.topics.route``), subscribed at their QoS; a bare topic
    filter (tests, tools) is subscribed at QoS 1.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        client_id: str,
        on_message: MessageHandler,
        subscriptions: Sequence[Route | str] = (),
        on_connect: ConnectHandler | None = None,
        will: LastWill | None = None,
        backoff_initial: float = 0.25,
        backoff_max: float = 10.0,
        max_queued_messages: int = 10_000,
    ) -> None:
        self._settings = settings
        self._client_id = client_id
        self._on_message = on_message
        self._subscriptions = tuple(subscriptions)
        self._on_connect = on_connect
        self._will = will
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._max_queued = max_queued_messages
        self._client: aiomqtt.Client | None = None
        self._attempt: aiomqtt.Client | None = None  # the latest client, connected or not
        self._settled = asyncio.Event()  # no attempt is inside aiomqtt's connect
        self._settled.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.connected = asyncio.Event()
        self.connections = 0
        self._log = log.bind(client_id=client_id, broker=settings.describe())

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name=f"mqtt-link:{self._client_id}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Disconnect cleanly (no last will is sent); idempotent.

        Cancels until the task has really ended: on Python 3.11 ``asyncio.wait_for`` (used inside
        aiomqtt) can swallow a cancellation that lands as its inner future completes.
        """
        task, self._task = self._task, None
        if task is None:
            return
        self._closing = True
        # Cancelled inside its connect, aiomqtt strands a half-open client (the connect goes on
        # in a thread, then starts a task nobody stops): let the attempt settle first.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(15):  # aiomqtt's own connect timeout is 10 s
                await self._settled.wait()
        while not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.5)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("mqtt link ended with an error", error=repr(task.exception()))
        self.connected.clear()
        # aiomqtt (2.5) cancels its housekeeping task from a callback once the socket has closed
        # and never awaits it: wait for it here, so a closed link leaves no task behind.
        misc = getattr(self._attempt, "_misc_task", None)
        if isinstance(misc, asyncio.Task) and not misc.done():
            misc.cancel()
            await asyncio.wait([misc])

    async def wait_connected(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await self.connected.wait()

    async def send(self, route: Route, payload: bytes) -> None:
        """Publish ``payload`` on ``route`` with its QoS and retain flag; LinkDown when down."""
        await self.publish(route.topic, payload, qos=route.qos, retain=route.retain)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish on a bare topic (tools and tests); our parts use ``send()``."""
        client = self._client
        if client is None or not self.connected.is_set():
            raise LinkDown(topic)
        try:
            await client.publish(topic, payload, qos=qos, retain=retain, timeout=10)
        except aiomqtt.MqttError as exc:
            raise LinkDown(topic, str(exc)) from exc

    def _client_for_attempt(self) -> aiomqtt.Client:
        will = None
        if self._will is not None:
            route = self._will.route
            will = aiomqtt.Will(route.topic, self._will.payload, qos=route.qos, retain=route.retain)
        return aiomqtt.Client(
            self._settings.host,
            self._settings.port,
            identifier=self._client_id,
            username=self._settings.username,
            password=self._settings.password,
            keepalive=self._settings.keepalive,
            will=will,
            clean_session=True,
            tls_context=self._settings.tls_context(),
            max_queued_incoming_messages=self._max_queued,
            timeout=10,
        )

    async def _run(self) -> None:
        delay = self._backoff_initial
        while not self._closing:
            client = self._attempt = self._client_for_attempt()
            self._settled.clear()
            try:
                async with client:
                    self._settled.set()
                    if self._closing:
                        return
                    self._client = client
                    for subscription in self._subscriptions:
                        if isinstance(subscription, Route):
                            await client.subscribe(subscription.topic, qos=subscription.qos)
                        else:
                            await client.subscribe(subscription, qos=1)
                    self.connections += 1
                    self.connected.set()
                    self._log.info("mqtt connected", connections=self.connections)
                    delay = self._backoff_initial
                    if self._on_connect is not None:
                        await self._on_connect()
                    async for message in client.messages:
                        if self._closing:
                            break
                        await self._dispatch(message)
            except aiomqtt.MqttError as exc:
                self._log.warning("mqtt link down, reconnecting", error=str(exc), retry_in=round(delay, 2))
            except ssl.SSLError as exc:
                self._log.error("mqtt TLS failed, reconnecting", error=str(exc), retry_in=round(delay, 2))
            finally:
                self._settled.set()
                self.connected.clear()
                self._client = None
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self._backoff_max)

    async def _dispatch(self, message: aiomqtt.Message) -> None:
        try:
            await self._on_message(message)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a handler's bug must not take the district offline
            # It is logged loudly, with its traceback.
            self._log.exception("mqtt message handler failed", topic=str(message.topic))
