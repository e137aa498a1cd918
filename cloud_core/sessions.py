"""Opening and closing viewer sessions: the core's side of the session flow.

Plain code, testable without gRPC: find the camera, make sure its agent is there, relay the
viewer's offer with an expiry, return the agent's answer. Media never passes through here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from google.protobuf.message import DecodeError

from cloud_core.exceptions import AgentUnavailable, CameraNotFound, SessionNotFound, SessionRejected
from cloud_core.registry import CameraRecord, Registry
from cloud_core.signalling import SignallingRelay
from protos.safetynet.v1 import mqtt_pb2

log = structlog.get_logger(__name__)

MAX_SDP_BYTES = 64 * 1024


@dataclass(frozen=True)
class OpenedSession:
    session_id: str
    sdp_answer: str
    expires_at: datetime
    camera: CameraRecord


class InvalidOffer(ValueError):
    pass


def check_offer(sdp_offer: str) -> None:
    """Cheap checks before anything is relayed; the agent parses the SDP for real."""
    if not sdp_offer.strip():
        raise InvalidOffer("the SDP offer is empty")
    if len(sdp_offer.encode()) > MAX_SDP_BYTES:
        raise InvalidOffer(f"the SDP offer is larger than {MAX_SDP_BYTES} bytes")
    if not sdp_offer.lstrip().startswith("v=0"):
        raise InvalidOffer("the SDP offer does not start with 'v=0'")
    if "m=video" not in sdp_offer:
        raise InvalidOffer("the SDP offer has no video m-line")


class SessionBroker:
    def __init__(self, registry: Registry, relay: SignallingRelay, *,
                 session_ttl: timedelta = timedelta(minutes=10),
                 answer_timeout: float = 10.0) -> None:
        self._registry = registry
        self._relay = relay
        self._ttl = session_ttl
        self._answer_timeout = answer_timeout

    def find_camera(self, camera_id: str) -> CameraRecord:
        camera = self._registry.camera(camera_id)
        if camera is None:
            raise CameraNotFound(camera_id)
        return camera

    @staticmethod
    def new_session_id() -> str:
        return f"ses-{uuid.uuid4().hex}"

    async def open(self, camera_id: str, sdp_offer: str, *, expires_at: datetime | None = None,
                   grant: bytes = b"", session_id: str | None = None,
                   record: dict[str, str] | None = None) -> OpenedSession:
        """Relay the offer (with its signed grant) and return the agent's answer.

        ``record`` adds who and why to the session's registry row (operator, agency, incident…).
        """
        check_offer(sdp_offer)
        camera = self.find_camera(camera_id)
        if not camera.agent_online:
            raise AgentUnavailable(camera.district_id, "its agent is offline")
        session_id = session_id or self.new_session_id()
        now = datetime.now(UTC)
        expires_at = min(expires_at or now + self._ttl, now + self._ttl)
        offer = mqtt_pb2.SessionOffer(session_id=session_id, camera_id=camera_id,
                                      sdp_offer=sdp_offer, grant=grant)
        offer.expires_at.FromDatetime(expires_at)
        response = await self._relay.request(camera.district_id, mqtt_pb2.SignalRequest(offer=offer),
                                             self._answer_timeout)
        if response.WhichOneof("result") == "error":
            code = mqtt_pb2.SignalError.Name(response.error.code).removeprefix("SIGNAL_ERROR_")
            raise SessionRejected(code, response.error.message)
        if response.WhichOneof("result") != "sdp_answer" or not response.sdp_answer:
            raise SessionRejected("INTERNAL", "the agent sent no SDP answer")
        self._registry.record_session(session_id, camera_id, camera.district_id, now, expires_at,
                                      **(record or {}))
        log.info("session opened", session=session_id, camera=camera_id, district=camera.district_id)
        return OpenedSession(session_id, response.sdp_answer, expires_at, camera)

    async def close(self, session_id: str, reason: str = "closed by viewer") -> None:
        record = self._registry.session(session_id)
        if record is None or record["closed_at"] is not None:
            raise SessionNotFound(session_id)
        await self.close_at_agent(session_id, str(record["district_id"]), reason)
        self._registry.end_session(session_id, datetime.now(UTC), reason)

    async def close_at_agent(self, session_id: str, district: str, reason: str) -> bool:
        """Ask the agent to end the session now; True when it confirmed (or had none)."""
        close = mqtt_pb2.SessionClose(session_id=session_id, reason=reason)
        try:
            response = await self._relay.request(district, mqtt_pb2.SignalRequest(close=close),
                                                 self._answer_timeout)
        except AgentUnavailable:
            # The agent ends it anyway at expiry; the registry records the intent now.
            log.warning("session close not confirmed by agent", session=session_id, district=district)
            return False
        if response.WhichOneof("result") == "error":
            log.info("agent had no such session", session=session_id, message=response.error.message)
        return True

    def handle_event(self, district_id: str, payload: bytes) -> mqtt_pb2.SessionEvent | None:
        """A session's end reported by the agent (viewer left, expired, …)."""
        try:
            event = mqtt_pb2.SessionEvent.FromString(payload)
        except DecodeError as exc:
            log.warning("rejected malformed session event", district=district_id, error=str(exc))
            return None
        if event.kind != mqtt_pb2.SessionEvent.KIND_ENDED:
            return None
        record = self._registry.session(event.session_id)
        if record is None or record["district_id"] != district_id:
            log.warning("session event for unknown session ignored", district=district_id,
                        session=event.session_id)
            return None
        self._registry.end_session(event.session_id, event.at.ToDatetime(tzinfo=UTC), event.reason,
                                   event.bytes_sent, event.duration_seconds)
        return event
