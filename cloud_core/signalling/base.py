"""The signalling seam: one request to a district's agent, its response or ``AgentUnavailable``."""

from __future__ import annotations

import abc
import uuid
from collections.abc import Awaitable, Callable

from cloud_core.exceptions import AgentUnavailable
from protos.safetynet.v1 import mqtt_pb2

#: The agent's side of the exchange: answer a request (``None``: stay silent, as a lost agent).
Responder = Callable[[mqtt_pb2.SignalRequest], Awaitable[mqtt_pb2.SignalResponse | None]]


class SignallingTransport(abc.ABC):
    """Carries a ``SignalRequest`` to one district's agent and brings back its response.

    Only the agent of the district the request was sent to can answer it. A request that cannot
    be sent, or that gets no answer within ``timeout`` seconds, raises
    ``cloud_core.exceptions.AgentUnavailable``.
    """

    @property
    @abc.abstractmethod
    def pending(self) -> int:
        """Requests sent and not yet answered or timed out."""

    @abc.abstractmethod
    async def request(self, district_id: str, request: mqtt_pb2.SignalRequest,
                      timeout: float) -> mqtt_pb2.SignalResponse:
        """Send ``request`` to the district's agent; its response, or AgentUnavailable."""

    async def request_relay(self, relay_id: str, request: mqtt_pb2.SignalRequest,
                            timeout: float) -> mqtt_pb2.SignalResponse:
        """Send ``request`` to a cloud relay (docs/cloud-relay.md); only MQTT carries them."""
        raise AgentUnavailable(f"relay:{relay_id}", "this signalling transport reaches no relays")


def ensure_request_id(request: mqtt_pb2.SignalRequest) -> str:
    """Give ``request`` an id if it has none (responses are matched by it); return the id."""
    if not request.request_id:
        request.request_id = uuid.uuid4().hex
    return request.request_id
