"""Relays signalling between the core and agents over MQTT, request by request.

The core publishes a ``SignalRequest`` on the district's request topic and waits, with a timeout,
for the ``SignalResponse`` carrying the same request id on that district's response topic. A
response from any other district's topic is ignored: an agent cannot answer for another.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Protocol

import structlog
from google.protobuf.message import DecodeError

from cloud_core.exceptions import AgentUnavailable
from protos import topics
from protos.safetynet.v1 import mqtt_pb2
from runtime.exceptions import LinkDown

log = structlog.get_logger(__name__)


class Publisher(Protocol):
    """What the relay needs of the core's MQTT connection; raises LinkDown when it is down."""

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1,
                      retain: bool = False) -> None: ...


@dataclass
class _Pending:
    district_id: str
    future: asyncio.Future[mqtt_pb2.SignalResponse]


class SignallingRelay:
    def __init__(self) -> None:
        self._link: Publisher | None = None
        self._pending: dict[str, _Pending] = {}

    def attach(self, link: Publisher) -> None:
        self._link = link

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def request(self, district_id: str, request: mqtt_pb2.SignalRequest,
                      timeout: float) -> mqtt_pb2.SignalResponse:
        """Send ``request`` to the district's agent; its response, or AgentUnavailable."""
        if self._link is None:
            raise AgentUnavailable(district_id, "the core is not connected to the broker")
        if not request.request_id:
            request.request_id = uuid.uuid4().hex
        future: asyncio.Future[mqtt_pb2.SignalResponse] = asyncio.get_running_loop().create_future()
        self._pending[request.request_id] = _Pending(district_id, future)
        try:
            # QoS 0: a request has its own timeout, and with clean sessions QoS 1 would add only
            # a PUBACK per message, not delivery across reconnects.
            await self._link.publish(topics.signal_request(district_id),
                                     request.SerializeToString(), qos=0)
            async with asyncio.timeout(timeout):
                return await future
        except LinkDown as exc:
            raise AgentUnavailable(district_id, f"the core cannot reach the broker ({exc.why})") from exc
        except TimeoutError as exc:
            raise AgentUnavailable(district_id, f"no answer within {timeout:g} s") from exc
        finally:
            self._pending.pop(request.request_id, None)

    def handle_response(self, district_id: str, payload: bytes) -> None:
        try:
            response = mqtt_pb2.SignalResponse.FromString(payload)
        except DecodeError as exc:
            log.warning("rejected malformed signal response", district=district_id, error=str(exc))
            return
        pending = self._pending.get(response.request_id)
        if pending is None:
            log.info("signal response for no pending request", district=district_id,
                     request=response.request_id)
            return
        if pending.district_id != district_id:
            log.warning("signal response from the wrong district ignored", district=district_id,
                        expected=pending.district_id, request=response.request_id)
            return
        if not pending.future.done():
            pending.future.set_result(response)
