"""The core's one MQTT connection, parsed a socket read at a time: a status costs microseconds.

Why not ``runtime.mqtt_link.MqttLink`` (aiomqtt over paho) as the agents use: paho handles one
packet per selector wake-up, reads each packet in several system calls, sends a PUBACK per QoS 1
message and builds an ``MQTTMessage`` and then an ``aiomqtt.Message`` for each; that tops out
near 6,000 statuses/s (and paho on a thread of its own, near 9,000), while a city-wide reconnect
is 68,000 statuses at once. The core needs only a small part of MQTT 3.1.1 - CONNECT, SUBSCRIBE,
PUBLISH both ways at QoS 0/1, PINGREQ - so this speaks it itself on an ``asyncio.Protocol``:
what is read is split into packets, at most 256 per loop iteration (reading pauses meanwhile), a
status is handed to ``on_status`` (``StatusIngest.submit``: O(1)) at once, and the rare other messages (signal
responses, session events) go, in order, through one bounded queue to ``on_message``.

One connection, not one for statuses and another for the rest: the city broker makes a
certificate's CN the client id (``use_username_as_clientid``), so a second connection of the core
would take over the first's session.

Reconnects with capped, jittered backoff; every (re)connection subscribes again and ``connected``
is set once the broker has granted the subscriptions. An async context manager; ``close()`` is
idempotent.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import struct
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Self

import structlog

from runtime.exceptions import LinkDown
from runtime.mqtt_link import BrokerSettings

log = structlog.get_logger(__name__)

StatusHandler = Callable[[str, bytes], bool]       # True when it took the message (a status)
MessageHandler = Callable[[str, bytes], Awaitable[None]]

MAX_LOOP_MESSAGES = 10_000   # non-status messages waiting for their handler (signalling: a trickle)
MAX_PACKET = 16 * 1024 * 1024  # a heartbeat of 10,000 cameras is ~1.2 MB
DRAIN_PACKETS = 256          # packets handled per loop iteration (~1-2 ms of the loop)
STEP_TIMEOUT = 10.0          # CONNACK, SUBACK, PUBACK

_CONNECT, _CONNACK, _PUBLISH, _PUBACK = 0x10, 0x20, 0x30, 0x40
_SUBSCRIBE, _SUBACK, _PINGREQ, _PINGRESP, _DISCONNECT = 0x82, 0x90, 0xC0, 0xD0, 0xE0


class ProtocolViolation(Exception):
    pass


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _text(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(raw)) + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _remaining_length(len(body)) + body


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: splits the byte stream into MQTT packets for the link."""

    def __init__(self, link: BrokerLink) -> None:
        self._link = link
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.received_at = 0.0
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise LinkDown("mqtt", "connection closed")
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.received_at = asyncio.get_running_loop().time()
        self._buffer += data
        if not self._paused:
            self._drain()

    def _drain(self) -> None:
        """Hand on up to DRAIN_PACKETS packets; if more are waiting, stop reading and come back
        on the next loop iteration, so a burst never holds the loop for more than a slice."""
        if self.transport is None or self.transport.is_closing():
            return
        buffer = self._buffer
        pos, end, handled = 0, len(buffer), 0
        try:
            while end - pos >= 2 and handled < DRAIN_PACKETS:
                length, multiplier, i, complete = 0, 1, pos + 1, False
                while i < end:
                    byte = buffer[i]
                    i += 1
                    length += (byte & 0x7F) * multiplier
                    if not byte & 0x80:
                        complete = True
                        break
                    multiplier *= 128
                    if multiplier > 128 ** 3:
                        raise ProtocolViolation("remaining length longer than 4 bytes")
                if not complete:
                    break
                if length > MAX_PACKET:
                    raise ProtocolViolation(f"a packet of {length} bytes")
                if i + length > end:
                    break
                self._link._handle(self, buffer[pos], bytes(memoryview(buffer)[i:i + length]))
                pos = i + length
                handled += 1
        except ProtocolViolation as exc:
            log.error("mqtt protocol violation, reconnecting", problem=str(exc))
            if self.transport is not None:
                self.transport.close()
            return
        del buffer[:pos]
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if handled == DRAIN_PACKETS:
            if not self._paused:
                self._paused = True
                transport.pause_reading()
            asyncio.get_running_loop().call_soon(self._drain)
        elif self._paused:
            self._paused = False
            transport.resume_reading()


class BrokerLink:
    """``on_status(topic, payload)`` runs as each message is read and returns True when it took
    it (statuses); anything else goes, in order, to ``on_message``.

    ``subscriptions`` are (topic filter, QoS) pairs, subscribed again on every connection.
    """

    def __init__(self, settings: BrokerSettings, *, client_id: str,
                 subscriptions: Sequence[tuple[str, int]], on_status: StatusHandler,
                 on_message: MessageHandler, on_dropped: Callable[[str], None] | None = None,
                 backoff_initial: float = 0.25, backoff_max: float = 10.0) -> None:
        self._settings = settings
        self._client_id = client_id
        self._subscriptions = tuple(subscriptions)
        self._on_status = on_status
        self._on_message = on_message
        self._on_dropped = on_dropped
        self._backoff = (backoff_initial, backoff_max)
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(MAX_LOOP_MESSAGES)
        self._tasks: list[asyncio.Task[None]] = []
        self._connection: _Connection | None = None
        self._step: asyncio.Future[bytes] | None = None      # CONNACK / SUBACK being awaited
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._next_id = 0
        self._closing = False
        self.connected = asyncio.Event()
        self.connections = 0
        self._log = log.bind(client_id=client_id, broker=settings.describe())

    async def __aenter__(self) -> Self:
        self._tasks = [asyncio.create_task(self._run(), name=f"broker-link:{self._client_id}"),
                       asyncio.create_task(self._deliver(), name="broker-link-deliver")]
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Disconnect cleanly (DISCONNECT: no last will) and stop; idempotent."""
        self._closing = True
        connection, self._connection = self._connection, None
        if connection is not None and connection.transport is not None:
            if not connection.transport.is_closing():
                connection.transport.write(_packet(_DISCONNECT, b""))
            connection.transport.close()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.connected.clear()

    async def wait_connected(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await self.connected.wait()

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1,
                      retain: bool = False) -> None:
        """Publish; at QoS 1 return once the broker has acknowledged it."""
        connection = self._connection
        if connection is None or not self.connected.is_set():
            raise LinkDown(topic)
        body = _text(topic)
        ack: asyncio.Future[None] | None = None
        if qos > 0:
            mid = self._message_id()
            body += struct.pack("!H", mid)
            ack = asyncio.get_running_loop().create_future()
            self._acks[mid] = ack
        connection.write(_packet(_PUBLISH | (1 << 1 if qos > 0 else 0) | int(retain),
                                 body + payload))
        if ack is not None:
            try:
                async with asyncio.timeout(STEP_TIMEOUT):
                    await ack
            except TimeoutError as exc:
                raise LinkDown(topic, f"no PUBACK within {STEP_TIMEOUT:g} s") from exc
            finally:
                self._acks.pop(mid, None)

    def _message_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    # --- connecting -------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self._backoff[0]
        while not self._closing:
            try:
                await self._session()
                delay = self._backoff[0]
            except (OSError, TimeoutError, LinkDown, ConnectionError) as exc:
                self._log.warning("mqtt link down, reconnecting", error=str(exc) or repr(exc),
                                  retry_in=round(delay, 2))
            except ssl.SSLError as exc:
                self._log.error("mqtt TLS failed, reconnecting", error=str(exc),
                                retry_in=round(delay, 2))
            finally:
                self.connected.clear()
                self._fail_pending()
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self._backoff[1])

    async def _session(self) -> None:
        settings, loop = self._settings, asyncio.get_running_loop()
        context = settings.tls_context()
        async with asyncio.timeout(STEP_TIMEOUT):
            _, connection = await loop.create_connection(
                lambda: _Connection(self), settings.host, settings.port, ssl=context,
                server_hostname=settings.host if context is not None else None)
        self._connection = connection
        try:
            ack = await self._request(connection, self._connect_packet())
            if len(ack) < 2 or ack[1] != 0:
                raise LinkDown("mqtt", f"connection refused (CONNACK code {ack[1:2].hex()})")
            mid = self._message_id()
            body = struct.pack("!H", mid) + b"".join(
                _text(topic) + bytes([qos]) for topic, qos in self._subscriptions)
            granted = await self._request(connection, _packet(_SUBSCRIBE, body))
            if 0x80 in granted[2:]:
                raise LinkDown("mqtt", f"subscription refused ({granted[2:].hex()})")
            self.connections += 1
            self.connected.set()
            self._log.info("mqtt connected", connections=self.connections)
            await self._keep_alive(connection)
        finally:
            self._connection = None
            if connection.transport is not None:
                connection.transport.close()

    def _connect_packet(self) -> bytes:
        s = self._settings
        flags = 0x02 | (0x80 if s.username is not None else 0) | (
            0x40 if s.password is not None else 0)
        body = _text("MQTT") + bytes([4, flags]) + struct.pack("!H", s.keepalive) + _text(
            self._client_id)
        if s.username is not None:
            body += _text(s.username)
        if s.password is not None:
            body += _text(s.password)
        return _packet(_CONNECT, body)

    async def _request(self, connection: _Connection, packet: bytes) -> bytes:
        """Send CONNECT or SUBSCRIBE and wait for its CONNACK or SUBACK (its body)."""
        step: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._step = step
        connection.write(packet)
        closed = asyncio.ensure_future(asyncio.shield(connection.closed))
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                waiters: list[asyncio.Future[Any]] = [step, closed]
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if not step.done():
            raise LinkDown("mqtt", "connection closed by the broker")
        return step.result()

    async def _keep_alive(self, connection: _Connection) -> None:
        """PINGREQ every half keepalive; give up when the broker says nothing for two."""
        loop = asyncio.get_running_loop()
        interval = max(0.5, self._settings.keepalive / 2)
        while True:
            try:
                async with asyncio.timeout(interval):
                    await asyncio.shield(connection.closed)
                raise LinkDown("mqtt", "connection closed by the broker")
            except TimeoutError:
                pass
            if loop.time() - connection.received_at > 2 * self._settings.keepalive:
                raise LinkDown("mqtt", f"nothing from the broker for {2 * self._settings.keepalive} s")
            connection.write(_packet(_PINGREQ, b""))

    def _fail_pending(self) -> None:
        for ack in self._acks.values():
            if not ack.done():
                ack.set_exception(LinkDown("mqtt", "connection lost before the PUBACK"))
        self._acks.clear()
        if self._step is not None and not self._step.done():
            self._step.cancel()

    # --- reading ----------------------------------------------------------------------------

    def _handle(self, connection: _Connection, first: int, body: bytes) -> None:
        kind = first & 0xF0
        if kind == _PUBLISH:
            qos = (first >> 1) & 0x03
            size = (body[0] << 8) | body[1]
            topic = body[2:2 + size].decode()
            start = 2 + size
            if qos:
                connection.write(_packet(_PUBACK, body[start:start + 2]))
                start += 2
            payload = body[start:]
            try:
                if not self._on_status(topic, payload):
                    self._enqueue(topic, payload)
            except Exception:
                # One bad message must not stop the reading; it is logged loudly.
                log.exception("mqtt status handler failed", topic=topic)
        elif kind == _PUBACK:
            ack = self._acks.get((body[0] << 8) | body[1])
            if ack is not None and not ack.done():
                ack.set_result(None)
        elif kind in (_CONNACK, _SUBACK):
            if self._step is not None and not self._step.done():
                self._step.set_result(body)
        elif kind != _PINGRESP:
            self._log.warning("unexpected mqtt packet ignored", packet_type=hex(kind))

    def _enqueue(self, topic: str, payload: bytes) -> None:
        try:
            self._queue.put_nowait((topic, payload))
        except asyncio.QueueFull:
            self._log.warning("core message queue full, message dropped", topic=topic,
                              limit=MAX_LOOP_MESSAGES)
            if self._on_dropped is not None:
                self._on_dropped(topic)

    async def _deliver(self) -> None:
        while True:
            topic, payload = await self._queue.get()
            try:
                await self._on_message(topic, payload)
            except asyncio.CancelledError:
                raise
            except Exception:
                # One bad message must not stop the others; it is logged loudly.
                log.exception("mqtt message handler failed", topic=topic)
