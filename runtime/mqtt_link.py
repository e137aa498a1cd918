"""One MQTT connection that keeps itself up.

``MqttLink`` wraps an ``aiomqtt.Client``: it connects, (re)subscribes, runs the caller's
``on_connect`` (to publish state that must be current after every reconnect), hands each message
to ``on_message``, and when the broker goes away it reconnects with capped, jittered backoff.
aiomqtt errors stop here: callers see ``LinkDown``.

With several broker addresses (a clustered broker, docs/scale-out.md) each attempt goes to the
next address: a dead node costs one connect timeout at most, and the capped backoff applies only
once every address has failed in a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiomqtt
import paho.mqtt.client as paho_mqtt
import structlog

from protos.topics import Route
from runtime.exceptions import LinkDown

log = structlog.get_logger(__name__)

MessageHandler = Callable[[aiomqtt.Message], Awaitable[None]]
ConnectHandler = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class BrokerAddress:
    """One broker node: where to open the TCP connection."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class BrokerSettings:
    """Where the broker is and how to prove who we are. TLS when ``ca_file`` is set.

    ``host``/``port`` name one broker; ``hosts`` (when not empty) the nodes of a cluster, tried
    in turn, and then ``host``/``port`` are unused. ``connect_timeout`` bounds one connection
    attempt (TCP, TLS, CONNACK and the subscriptions) to one address. ``max_subscribe_qos``
    caps the QoS we subscribe at: 0 on a NATS cluster, where each QoS 1 subscription is a
    replicated JetStream consumer that stalls for a raft election after a node loss, and buys
    nothing with clean sessions (docs/scale-out.md). ``standby``: with two or more ``hosts``,
    keep a second connection for signalling on another node (``runtime.standby_link``).
    """

    host: str = "127.0.0.1"
    port: int = 1883
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    keepalive: int = 15
    hosts: tuple[BrokerAddress, ...] = ()
    connect_timeout: float = 5.0
    max_subscribe_qos: int = 2
    standby: bool = True

    @property
    def uses_tls(self) -> bool:
        return self.ca_file is not None

    @property
    def addresses(self) -> tuple[BrokerAddress, ...]:
        """Every address to try, in order: ``hosts``, or the single ``host:port``."""
        return self.hosts or (BrokerAddress(self.host, self.port),)

    def standby_settings(self) -> BrokerSettings | None:
        """The standby connection's settings: the nodes in turn from the second on, so that it
        is on another node than the first connection; None with fewer than two nodes."""
        if not self.standby or len(self.hosts) < 2:
            return None
        return replace(self, hosts=(*self.hosts[1:], self.hosts[0]))

    def describe(self) -> str:
        nodes = ",".join(str(a) for a in self.addresses)
        return f"{'mqtts' if self.uses_tls else 'mqtt'}://{nodes}"

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
                               "password", "keepalive", "hosts", "connect_timeout",
                               "max_subscribe_qos", "standby"}
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
        connect_timeout = data.get("connect_timeout", 5.0)
        if not isinstance(connect_timeout, int | float) or not 0 < connect_timeout <= 60:
            raise ValueError("broker.connect_timeout must be a number of seconds in (0, 60]")
        max_qos = data.get("max_subscribe_qos", 2)
        if max_qos not in (0, 1, 2) or isinstance(max_qos, bool):
            raise ValueError("broker.max_subscribe_qos must be 0, 1 or 2")
        standby = data.get("standby", True)
        if not isinstance(standby, bool):
            raise ValueError("broker.standby must be true or false")
        return cls(host=host, port=port, ca_file=path("ca_file"), cert_file=path("cert_file"),
                   key_file=path("key_file"), username=data.get("username"),
                   password=data.get("password"), keepalive=int(data.get("keepalive", 15)),
                   hosts=parse_hosts(data.get("hosts", []), default_port=port),
                   connect_timeout=float(connect_timeout), max_subscribe_qos=max_qos,
                   standby=standby)


def parse_hosts(value: object, *, default_port: int) -> tuple[BrokerAddress, ...]:
    """``["node1:1883", "node2", "[::1]:1883"]`` -> addresses; ValueError naming a bad entry."""
    if not isinstance(value, list):
        raise ValueError('broker.hosts must be a list like ["mqtt1:1883", "mqtt2:1883"]')
    addresses: list[BrokerAddress] = []
    for entry in value:
        if not isinstance(entry, str) or not entry.strip():
            raise ValueError(f"broker.hosts: {entry!r} is not a host[:port]")
        host, _, port_text = entry.strip().rpartition(":")
        if not host or port_text.startswith("]") or (host.startswith("[") is not host.endswith("]")):
            host, port_text = entry.strip(), ""
        port = default_port
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ValueError(f"broker.hosts: {entry!r} has no valid port number")
            port = int(port_text)
        addresses.append(BrokerAddress(host.strip("[]"), port))
    if len(set(addresses)) != len(addresses):
        raise ValueError("broker.hosts lists an address twice")
    return tuple(addresses)


@dataclass(frozen=True)
class LastWill:
    """What the broker publishes for us when our connection is lost: ``payload`` on ``route``."""

    route: Route
    payload: bytes


#: Builds the last will of one connection attempt, called as the attempt starts, so the will can
#: name its connection (an agent's ``AgentStatus.connected_at``, docs/mqtt.md).
WillFactory = Callable[[], LastWill]


class MqttLink:
    """A self-healing MQTT connection; an async context manager owning one background task.

    ``subscriptions`` are routes (``protos.topics.route``), subscribed at their QoS; a bare topic
    filter (tests, tools) is subscribed at QoS 1. ``will`` is one ``LastWill`` for every
    connection, or a ``WillFactory`` called at every connection attempt, before ``on_connect``
    of that connection.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        client_id: str,
        on_message: MessageHandler,
        subscriptions: Sequence[Route | str] = (),
        on_connect: ConnectHandler | None = None,
        will: LastWill | WillFactory | None = None,
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
        self._address: BrokerAddress | None = None
        self._attempt: aiomqtt.Client | None = None  # the latest client, connected or not
        self._inbox: asyncio.Queue[aiomqtt.Message] | None = None  # the attempt's incoming queue
        self._settled = asyncio.Event()  # no attempt is inside aiomqtt's connect
        self._settled.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.connected = asyncio.Event()
        self._connected_since: float | None = None
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
            # aiomqtt waits connect_timeout for a CONNACK, paho 5 s for TCP and TLS.
            async with asyncio.timeout(self._settings.connect_timeout + 10):
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
        if qos == 0:
            # Nothing confirms a QoS 0 message, so nothing is awaited: aiomqtt's publish would
            # wait a loop turn for paho's socket write (an event, a pending call, a wake-up per
            # signalling message). Queued with paho at once, as aiomqtt itself does.
            info = client._client.publish(topic, payload, 0, retain)
            if info.rc != paho_mqtt.MQTT_ERR_SUCCESS:
                raise LinkDown(topic, f"the broker connection refused the message "
                                      f"({paho_mqtt.error_string(info.rc)})")
            return
        try:
            await client.publish(topic, payload, qos=qos, retain=retain, timeout=10)
        except aiomqtt.MqttError as exc:
            raise LinkDown(topic, str(exc)) from exc

    def up_for(self) -> float:
        """Seconds since this connection came up; 0 while the link is down."""
        since = self._connected_since
        return 0.0 if since is None else time.monotonic() - since

    @property
    def broker(self) -> BrokerAddress | None:
        """The address this link is connected to now, or None while it is down."""
        return self._address if self.connected.is_set() else None

    def _client_for_attempt(self, address: BrokerAddress) -> aiomqtt.Client:
        will = None
        if self._will is not None:
            last_will = self._will if isinstance(self._will, LastWill) else self._will()
            route = last_will.route
            will = aiomqtt.Will(route.topic, last_will.payload, qos=route.qos, retain=route.retain)
        made: list[asyncio.Queue[aiomqtt.Message]] = []

        class Inbox(asyncio.Queue[aiomqtt.Message]):
            """aiomqtt's incoming queue (its ``queue_type``), kept where ``_read`` can drain it."""

            def __init__(self, maxsize: int = 0) -> None:
                super().__init__(maxsize)
                made.append(self)

        client = aiomqtt.Client(
            address.host,
            address.port,
            identifier=self._client_id,
            username=self._settings.username,
            password=self._settings.password,
            keepalive=self._settings.keepalive,
            will=will,
            clean_session=True,
            tls_context=self._settings.tls_context(),
            max_queued_incoming_messages=self._max_queued,
            queue_type=Inbox,
            # Bounds the CONNACK and every SUBACK: a node that accepts TCP and says nothing
            # costs one timeout, then the next node is tried (paho bounds TCP+TLS at 5 s).
            timeout=self._settings.connect_timeout,
        )
        self._inbox = made[0]
        return client

    async def _run(self) -> None:
        addresses = self._settings.addresses
        delay, index, failures = self._backoff_initial, 0, 0
        while not self._closing:
            address = addresses[index % len(addresses)]
            try:
                if await self._session(address):
                    return
                delay, failures = self._backoff_initial, 0  # it was up: start afresh
            except aiomqtt.MqttError as exc:
                self._log.warning("mqtt link down", node=str(address), error=str(exc))
            except ssl.SSLError as exc:
                self._log.error("mqtt TLS failed", node=str(address), error=str(exc))
            finally:
                self._settled.set()
                self.connected.clear()
                self._connected_since = None
                self._client = None
            failures += 1
            index += 1
            if failures < len(addresses):
                continue  # another node may be up: try it at once
            self._log.info("mqtt reconnecting", retry_in=round(delay, 2))
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self._backoff_max)

    async def _session(self, address: BrokerAddress) -> bool:
        """One connection to ``address``, served until it drops; True when closing."""
        client = self._attempt = self._client_for_attempt(address)
        self._settled.clear()
        async with client:
            self._settled.set()
            if self._closing:
                return True
            self._client, self._address = client, address
            # Read from the first byte on: the broker sends every retained message a
            # subscription matches right behind its SUBACK (68,000 statuses on a city core), and
            # a reader that waited for the subscriptions and on_connect's publish acknowledgement
            # first would let aiomqtt's bounded queue overflow and drop them.
            reader = asyncio.create_task(self._read(client), name=f"mqtt-read:{self._client_id}")
            try:
                await self._subscribe(client)
                self.connections += 1
                self._connected_since = time.monotonic()
                self.connected.set()
                self._log.info("mqtt connected", node=str(address), connections=self.connections)
                if self._on_connect is not None:
                    await self._greet(self._on_connect, reader)
                await reader
            finally:
                if not reader.done():
                    reader.cancel()
                    await asyncio.wait([reader])
                elif not reader.cancelled():
                    reader.exception()  # seen: it is why this session ends, logged by _run
        return self._closing

    async def _greet(self, on_connect: ConnectHandler, reader: asyncio.Task[None]) -> None:
        """Run ``on_connect``; a publish of it that timed out (its acknowledgement queued behind
        a large retained backlog the reader is still taking) is tried again, not a lost link."""
        delay = self._backoff_initial
        while True:
            try:
                await on_connect()
                return
            except LinkDown as exc:
                if reader.done():
                    await reader  # the reader's own MqttError: the connection is gone
                if reader.done() or not self.connected.is_set():
                    # The connection dropped under on_connect: this is a lost link, to be
                    # reconnected like any other, never the end of the link.
                    raise aiomqtt.MqttError(f"connection lost during on_connect: {exc.why}") \
                        from exc
                self._log.warning("on_connect publish failed, trying again", why=exc.why,
                                  retry_in=round(delay, 2))
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff_max)

    async def _read(self, client: aiomqtt.Client) -> None:
        inbox = self._inbox
        assert inbox is not None
        async for message in client.messages:
            await self._dispatch(message)
            # aiomqtt's iterator costs a task and a wait (three loop turns) per message, and its
            # reader adds one message per loop turn: what is already queued is taken at once,
            # or a burst outruns the iterator and overflows the queue.
            while not self._closing and not inbox.empty():
                await self._dispatch(inbox.get_nowait())
            if self._closing:
                break

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        """Subscribe to every route; a refused one (SUBACK 0x80) fails this connection.

        A clustered broker refuses a QoS 1 subscription it cannot back with a replicated
        consumer yet (NATS, right after a node loss): better to try again than to run deaf.
        """
        if not self._subscriptions:
            return
        filters = [((s.topic, s.qos) if isinstance(s, Route) else (s, 1)) for s in self._subscriptions]
        # One SUBSCRIBE for all: its single SUBACK comes before any retained message, not after
        # the first filter's whole retained backlog.
        granted = await client.subscribe(
            [(topic, min(qos, self._settings.max_subscribe_qos)) for topic, qos in filters])
        if len(granted) != len(filters):
            raise aiomqtt.MqttError(f"the broker granted {len(granted)} of {len(filters)} subscriptions")
        for (topic, _), code in zip(filters, granted, strict=True):
            if _refused(code):
                raise aiomqtt.MqttError(f"the broker refused the subscription to {topic}")

    async def _dispatch(self, message: aiomqtt.Message) -> None:
        try:
            await self._on_message(message)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a handler's bug must not take the district offline
            # It is logged loudly, with its traceback.
            self._log.exception("mqtt message handler failed", topic=str(message.topic))


def _refused(code: object) -> bool:
    """A SUBACK return code that grants nothing (0x80, or any MQTT 5 failure reason)."""
    is_failure = getattr(code, "is_failure", None)
    if isinstance(is_failure, bool):
        return is_failure
    return isinstance(code, int) and code >= 0x80
