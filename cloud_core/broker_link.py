"""The core's one MQTT connection, read on a thread of its own: statuses never touch the loop.

Why not ``runtime.mqtt_link.MqttLink`` (aiomqtt) as the agents use: there paho runs on the event
loop, one loop iteration per packet, a selector change per PUBACK and an ``aiomqtt.Message`` and
a queue hop per message. That tops out near 6,000 QoS 1 statuses/s and holds the loop for all of
it, while a city-wide reconnect is 68,000 statuses at once. Here paho's own network thread reads
the socket and acknowledges; a status is handed straight to ``StatusIngest.submit`` (thread-safe,
O(1)), and only the rare other messages (signal responses, session events) cross to the loop, in
order, through one bounded queue.

One connection, not one for statuses and another for the rest: the city broker makes a
certificate's CN the client id (``use_username_as_clientid``), so a second connection of the core
would take over the first's session.

Reconnects are paho's own (capped exponential backoff, ``reconnect_delay_set``); every
(re)connection subscribes again and ``connected`` is set once the broker has granted the
subscriptions. An async context manager; ``close()`` is idempotent.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion

from runtime.exceptions import LinkDown
from runtime.mqtt_link import BrokerSettings

log = structlog.get_logger(__name__)

ThreadHandler = Callable[[str, bytes], bool]       # on paho's thread: True when it took the message
LoopHandler = Callable[[str, bytes], Awaitable[None]]

MAX_LOOP_MESSAGES = 10_000   # non-status messages waiting for the loop (signalling is a trickle)


class BrokerLink:
    """``on_thread(topic, payload)`` runs on paho's network thread for every message and returns
    True when it took it (statuses); anything else goes, in order, to ``on_loop`` on the loop.

    ``subscriptions`` are (topic filter, QoS) pairs, subscribed again on every connection.
    """

    def __init__(self, settings: BrokerSettings, *, client_id: str,
                 subscriptions: Sequence[tuple[str, int]],
                 on_thread: ThreadHandler, on_loop: LoopHandler,
                 on_dropped: Callable[[str], None] | None = None,
                 backoff_initial: float = 0.25, backoff_max: float = 10.0) -> None:
        self._settings = settings
        self._client_id = client_id
        self._subscriptions = tuple(subscriptions)
        self._on_thread = on_thread
        self._on_loop = on_loop
        self._on_dropped = on_dropped
        self._backoff = (backoff_initial, backoff_max)
        self._client: paho.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(MAX_LOOP_MESSAGES)
        self._task: asyncio.Task[None] | None = None
        self._subscribe_mid: int | None = None
        self._lock = threading.Lock()
        self.connected = asyncio.Event()
        self.connections = 0
        self._log = log.bind(client_id=client_id, broker=settings.describe())

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self._client_id,
                             clean_session=True)
        if self._settings.username is not None:
            client.username_pw_set(self._settings.username, self._settings.password)
        context = self._settings.tls_context()
        if context is not None:
            client.tls_set_context(context)
        client.max_inflight_messages_set(100)
        client.reconnect_delay_set(self._backoff[0], self._backoff[1])  # type: ignore[arg-type]
        client.on_connect = self._connected
        client.on_subscribe = self._subscribed
        client.on_disconnect = self._disconnected
        client.on_message = self._message
        self._client = client
        self._task = asyncio.create_task(self._deliver(), name=f"broker-link:{self._client_id}")
        client.connect_async(self._settings.host, self._settings.port,
                             keepalive=self._settings.keepalive)
        client.loop_start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Disconnect cleanly and stop paho's thread; idempotent."""
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.connected.clear()

    async def wait_connected(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await self.connected.wait()

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1,
                      retain: bool = False) -> None:
        """Publish; for QoS 1 wait (off the loop) for the broker's acknowledgement."""
        client = self._client
        if client is None or not self.connected.is_set():
            raise LinkDown(topic)
        info = client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise LinkDown(topic, paho.error_string(info.rc))
        if qos > 0:
            try:
                await asyncio.to_thread(info.wait_for_publish, 10)
            except RuntimeError as exc:
                raise LinkDown(topic, str(exc)) from exc
            if not info.is_published():
                raise LinkDown(topic, "no acknowledgement within 10 s")

    # --- paho's network thread ----------------------------------------------------------------

    def _connected(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                   properties: Any) -> None:
        if reason.is_failure:
            self._log.warning("mqtt connection refused", reason=str(reason))
            return
        result, mid = client.subscribe(list(self._subscriptions))
        with self._lock:
            self._subscribe_mid = mid if result == paho.MQTT_ERR_SUCCESS else None

    def _subscribed(self, client: paho.Client, userdata: Any, mid: int, reasons: Any,
                    properties: Any) -> None:
        with self._lock:
            if mid != self._subscribe_mid:
                return
        if any(r.is_failure for r in reasons):
            self._log.error("mqtt subscription refused", reasons=[str(r) for r in reasons])
            return
        self.connections += 1
        self._log.info("mqtt connected", connections=self.connections)
        self._call_on_loop(self.connected.set)

    def _disconnected(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                      properties: Any) -> None:
        self._call_on_loop(self.connected.clear)
        if self._client is not None:
            self._log.warning("mqtt link down, reconnecting", reason=str(reason))

    def _message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            topic, payload = message.topic, bytes(message.payload)
            if not self._on_thread(topic, payload):
                self._call_on_loop(self._enqueue, topic, payload)
        except Exception:
            # Never into paho: an exception there would end its network thread.
            log.exception("mqtt message handler failed", topic=message.topic)

    def _call_on_loop(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback, *args)

    # --- the loop ---------------------------------------------------------------------------

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
                await self._on_loop(topic, payload)
            except asyncio.CancelledError:
                raise
            except Exception:
                # One bad message must not stop the others; it is logged loudly.
                log.exception("mqtt message handler failed", topic=topic)
