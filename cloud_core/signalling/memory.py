"""In-process signalling: the fake beside ``MqttSignalling``, for tests without a broker.

``InMemorySignalling`` hands each request, as wire bytes, to the responder connected for its
district and brings the response back the same way, with the same timeout and the same
``AgentUnavailable`` as over MQTT. ``FakeAgent`` is a scripted agent-side responder: it answers
offers, closes the sessions it holds, refuses with a given code, or falls silent.
"""

from __future__ import annotations

import asyncio
from collections import deque

import structlog

from cloud_core.exceptions import AgentUnavailable
from cloud_core.signalling.base import Responder, SignallingTransport, ensure_request_id
from protos.safetynet.v1 import mqtt_pb2

log = structlog.get_logger(__name__)

#: What ``FakeAgent`` answers an offer with unless told otherwise.
FAKE_SDP_ANSWER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=fake agent\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"


class InMemorySignalling(SignallingTransport):
    """Signalling to responders in this process, one per district (``connect()``)."""

    def __init__(self) -> None:
        self._agents: dict[str, Responder] = {}
        self._pending = 0

    def connect(self, district_id: str, responder: Responder) -> None:
        """From now on ``responder`` answers the requests sent to ``district_id``."""
        self._agents[district_id] = responder

    def disconnect(self, district_id: str) -> None:
        """The district's agent is gone: its requests fail as unreachable."""
        self._agents.pop(district_id, None)

    @property
    def pending(self) -> int:
        return self._pending

    async def request(self, district_id: str, request: mqtt_pb2.SignalRequest,
                      timeout: float) -> mqtt_pb2.SignalResponse:
        request_id = ensure_request_id(request)
        responder = self._agents.get(district_id)
        if responder is None:
            raise AgentUnavailable(district_id, "no agent is connected for the district")
        wire = request.SerializeToString()
        self._pending += 1
        try:
            async with asyncio.timeout(timeout):
                response = await responder(mqtt_pb2.SignalRequest.FromString(wire))
                if response is None or response.request_id != request_id:
                    if response is not None:
                        log.info("signal response for no pending request", district=district_id,
                                 request=response.request_id)
                    await asyncio.Event().wait()  # like MQTT: no matching answer, wait it out
        except TimeoutError as exc:
            raise AgentUnavailable(district_id, f"no answer within {timeout:g} s") from exc
        finally:
            self._pending -= 1
        assert response is not None
        return mqtt_pb2.SignalResponse.FromString(response.SerializeToString())


class FakeAgent:
    """A scripted agent-side responder for ``InMemorySignalling``.

    Answers every offer with ``sdp_answer`` and holds its session until closed; answers a close
    for a session it does not hold with ``UNKNOWN_SESSION``, as a real agent does.
    ``refuse_next(code, message)`` makes the next offer fail; ``silent = True`` makes it answer
    nothing at all. ``requests`` keeps every request received, in order.
    """

    def __init__(self, sdp_answer: str = FAKE_SDP_ANSWER) -> None:
        self.sdp_answer = sdp_answer
        self.requests: list[mqtt_pb2.SignalRequest] = []
        self.sessions: set[str] = set()
        self.silent = False
        self._refusals: deque[tuple[mqtt_pb2.SignalError, str]] = deque()

    def refuse_next(self, code: mqtt_pb2.SignalError, message: str) -> None:
        self._refusals.append((code, message))

    async def __call__(self, request: mqtt_pb2.SignalRequest) -> mqtt_pb2.SignalResponse | None:
        self.requests.append(request)
        if self.silent:
            return None
        response = mqtt_pb2.SignalResponse(request_id=request.request_id)
        if request.WhichOneof("body") == "offer":
            response.session_id = request.offer.session_id
            if self._refusals:
                response.error.code, response.error.message = self._refusals.popleft()
            else:
                self.sessions.add(request.offer.session_id)
                response.sdp_answer = self.sdp_answer
        elif request.WhichOneof("body") == "close":
            response.session_id = request.close.session_id
            if request.close.session_id in self.sessions:
                self.sessions.discard(request.close.session_id)
                response.closed = True
            else:
                response.error.code = mqtt_pb2.SIGNAL_ERROR_UNKNOWN_SESSION
                response.error.message = f"session {request.close.session_id!r} is not open here"
        return response
