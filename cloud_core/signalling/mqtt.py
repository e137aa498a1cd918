"""Signalling over MQTT, request by request.

The core publishes a ``SignalRequest`` on the district's request topic and waits, with a timeout,
for the ``SignalResponse`` carrying the same request id on that district's response topic. A
response from any other district's topic is ignored: an agent cannot answer for another.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

import structlog
from google.protobuf.message import DecodeError

from cloud_core.exceptions import AgentUnavailable
from cloud_core.signalling.base import SignallingTransport, ensure_request_id
from protos import topics
from protos.safetynet.v1 import mqtt_pb2
from runtime.exceptions import LinkDown
from runtime.standby_link import SeenRequests

log = structlog.get_logger(__name__)


def relay_key(relay_id: str) -> str:
    """Where a relay's pending requests are kept: never a district id (those have no ':')."""
    return f"relay:{relay_id}"


class Sender(Protocol):
    """Where requests go out: an ``MqttLink``, or a ``SignalPair`` with its standby."""

    async def send(self, route: topics.Route, payload: bytes) -> None: ...


@dataclass
class _Pending:
    district_id: str
    future: asyncio.Future[mqtt_pb2.SignalResponse]


class MqttSignalling(SignallingTransport):
    """Requests on ``…/<district>/signal/request``, answers from ``…/<district>/signal/response``.

    The core's MQTT link delivers each response to ``handle_response()``.
    """

    def __init__(self) -> None:
        self._link: Sender | None = None
        self._pending: dict[str, _Pending] = {}
        self._answered = SeenRequests()  # a second copy (from the standby link) is no news

    def attach(self, link: Sender | None) -> None:
        """Send through ``link`` from now on (``None``: the core is not connected)."""
        self._link = link

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def request(self, district_id: str, request: mqtt_pb2.SignalRequest,
                      timeout: float) -> mqtt_pb2.SignalResponse:
        return await self._request(district_id, topics.route(topics.Kind.SIGNAL_REQUEST, district_id),
                                   request, timeout)

    async def request_relay(self, relay_id: str, request: mqtt_pb2.SignalRequest,
                            timeout: float) -> mqtt_pb2.SignalResponse:
        """A request on ``safetynet/v1/relays/<relay>/signal/request``; answered only from that
        relay's response topic (``handle_relay_response``)."""
        return await self._request(relay_key(relay_id),
                                   topics.relay_route(topics.Kind.SIGNAL_REQUEST, relay_id),
                                   request, timeout)

    def handle_relay_response(self, relay_id: str, payload: bytes) -> None:
        """A ``SignalResponse`` arrived on ``relay_id``'s response topic."""
        self.handle_response(relay_key(relay_id), payload)

    async def _request(self, district_id: str, route: topics.Route,
                       request: mqtt_pb2.SignalRequest, timeout: float) -> mqtt_pb2.SignalResponse:
        if self._link is None:
            raise AgentUnavailable(district_id, "the core is not connected to the broker")
        request_id = ensure_request_id(request)
        future: asyncio.Future[mqtt_pb2.SignalResponse] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = _Pending(district_id, future)
        try:
            await self._link.send(route, request.SerializeToString())
            async with asyncio.timeout(timeout):
                return await future
        except LinkDown as exc:
            raise AgentUnavailable(district_id, f"the core cannot reach the broker ({exc.why})") from exc
        except TimeoutError as exc:
            raise AgentUnavailable(district_id, f"no answer within {timeout:g} s") from exc
        finally:
            self._pending.pop(request_id, None)

    def handle_response(self, district_id: str, payload: bytes) -> None:
        """A ``SignalResponse`` arrived on ``district_id``'s response topic."""
        try:
            response = mqtt_pb2.SignalResponse.FromString(payload)
        except DecodeError as exc:
            log.warning("rejected malformed signal response", district=district_id, error=str(exc))
            return
        pending = self._pending.get(response.request_id)
        if pending is None:
            if self._answered.first(response.request_id):
                log.info("signal response for no pending request", district=district_id,
                         request=response.request_id)
            return
        if pending.district_id != district_id:
            log.warning("signal response from the wrong district ignored", district=district_id,
                        expected=pending.district_id, request=response.request_id)
            return
        if not pending.future.done():
            self._answered.first(response.request_id)
            pending.future.set_result(response)
