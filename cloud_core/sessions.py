"""Opening and closing viewer sessions: the core's side of the session flow.

Plain code, testable without gRPC or a broker (``cloud_core.signalling.InMemorySignalling``):
find the camera, make sure its agent is there, relay the viewer's offer with an expiry, return the
agent's answer. Media never passes through here.

Each session the broker handles moves through ``SessionPhase``, and every transition is logged
(``session phase``, with ``old`` and ``new``)::

    offering ─► open ─► closing ─► closed
        │         └──────────────► closed      (the agent reported its end)
        ├─► rejected                           (the agent refused, or sent no answer)
        └─► unanswered                         (the agent could not be reached in time)

Phases are this broker's own (a log of what it did); what a session *is* lives in the registry's
row, relay included, so a core replica that did not open a session closes it from the row alone,
and of the replicas that all receive the agent's end report the first to take it records it.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from google.protobuf.message import DecodeError

from cloud_core.exceptions import AgentUnavailable, CameraNotFound, SessionNotFound, SessionRejected
from cloud_core.registry import CameraRecord, Registry
from cloud_core.signalling import SignallingTransport
from cloud_core.signalling_errors import code_name
from protos.safetynet.v1 import mqtt_pb2
from runtime.turn_credentials import TurnSettings, mint
from runtime.turn_credentials import to_proto as turn_to_proto
from runtime.webrtc import IceServer

log = structlog.get_logger(__name__)

MAX_SDP_BYTES = 64 * 1024


class SessionPhase(enum.Enum):
    OFFERING = "offering"      # the offer is on its way to the agent
    OPEN = "open"              # the agent answered; media may flow
    REJECTED = "rejected"      # the agent refused the offer (or sent no answer)
    UNANSWERED = "unanswered"  # the agent could not be reached within the answer timeout
    CLOSING = "closing"        # the core asked the agent to end it
    CLOSED = "closed"

    @property
    def final(self) -> bool:
        return self in (SessionPhase.REJECTED, SessionPhase.UNANSWERED, SessionPhase.CLOSED)


@dataclass(frozen=True)
class OpenedSession:
    session_id: str
    sdp_answer: str
    expires_at: datetime
    camera: CameraRecord
    ice_servers: tuple[IceServer, ...] = ()  # TURN minted for this session (both ends)
    via_relay: str = ""  # the cloud relay that serves it; empty: the district's agent directly
    basis: str = ""  # what allowed it (the registry row's ``basis``), and for which incident
    incident_id: str = ""


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
    def __init__(self, registry: Registry, relay: SignallingTransport, *,
                 session_ttl: timedelta = timedelta(minutes=10),
                 answer_timeout: float = 10.0, turn: TurnSettings | None = None) -> None:
        self._registry = registry
        self.turn = turn  # mints TURN credentials per session for both ends, when set
        self._relay = relay
        self._ttl = session_ttl
        self._answer_timeout = answer_timeout
        self._phases: dict[str, SessionPhase] = {}

    def phase(self, session_id: str) -> SessionPhase | None:
        """Where the session is, while this broker handles it (``None`` once it is final)."""
        return self._phases.get(session_id)

    def relay_of(self, session_id: str) -> str:
        """The cloud relay serving the session ("": the district's agent). Read from the
        registry, so a replica that did not open it, or a restarted core, reaches it too."""
        record = self._registry.session(session_id)
        return str(record["relay_id"]) if record is not None else ""

    def _set_phase(self, session_id: str, new: SessionPhase, **why: object) -> None:
        old = self._phases.get(session_id)
        if new.final:
            self._phases.pop(session_id, None)
        else:
            self._phases[session_id] = new
        log.info("session phase", session=session_id, old=old.value if old else None,
                 new=new.value, **why)

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
                   record: dict[str, str] | None = None,
                   relay_id: str = "", camera: CameraRecord | None = None) -> OpenedSession:
        """Relay the offer (with its signed grant) and return the agent's answer.

        ``record`` adds who and why to the session's registry row (operator, agency, incident…).
        With ``relay_id`` the offer goes to that cloud relay instead of the camera's agent.
        ``camera``: the camera's row as the caller just read it (not read again).
        """
        check_offer(sdp_offer)
        if camera is None or camera.camera_id != camera_id:
            camera = self.find_camera(camera_id)
        if not camera.agent_online:
            raise AgentUnavailable(camera.district_id, "its agent is offline")
        session_id = session_id or self.new_session_id()
        now = datetime.now(UTC)
        expires_at = min(expires_at or now + self._ttl, now + self._ttl)
        ice_servers = (mint(self.turn, session_id),) if self.turn is not None else ()
        offer = mqtt_pb2.SessionOffer(session_id=session_id, camera_id=camera_id,
                                      sdp_offer=sdp_offer, grant=grant,
                                      ice_servers=turn_to_proto(ice_servers))
        offer.expires_at.FromDatetime(expires_at)
        self._set_phase(session_id, SessionPhase.OFFERING, camera=camera_id,
                        district=camera.district_id)
        try:
            if relay_id:
                response = await self._relay.request_relay(
                    relay_id, mqtt_pb2.SignalRequest(offer=offer), self._answer_timeout)
            else:
                response = await self._relay.request(
                    camera.district_id, mqtt_pb2.SignalRequest(offer=offer), self._answer_timeout)
        except AgentUnavailable as exc:
            self._set_phase(session_id, SessionPhase.UNANSWERED, why=exc.why)
            raise
        except BaseException:
            self._phases.pop(session_id, None)  # cancelled with the caller: nothing was opened
            raise
        answer = self._answer_of(session_id, response)
        self._registry.record_session(session_id, camera_id, camera.district_id, now, expires_at,
                                      relay_id=relay_id, **(record or {}))
        self._set_phase(session_id, SessionPhase.OPEN, **({"relay": relay_id} if relay_id else {}))
        return OpenedSession(session_id, answer, expires_at, camera, ice_servers, relay_id,
                             basis=(record or {}).get("basis", ""),
                             incident_id=(record or {}).get("incident_id", ""))

    async def relay(self, district_id: str,
                    request: mqtt_pb2.SignalRequest) -> mqtt_pb2.SignalResponse:
        """Relay another kind of request (a dispatch still) to a district's agent."""
        return await self._relay.request(district_id, request, self._answer_timeout)

    def _answer_of(self, session_id: str, response: mqtt_pb2.SignalResponse) -> str:
        """The SDP answer in ``response``; SessionRejected (phase ``rejected``) without one."""
        if response.WhichOneof("result") == "error":
            rejected = SessionRejected(response.error.code, response.error.message)
        elif response.WhichOneof("result") != "sdp_answer" or not response.sdp_answer:
            rejected = SessionRejected(mqtt_pb2.SIGNAL_ERROR_INTERNAL, "the agent sent no SDP answer")
        else:
            return response.sdp_answer
        self._set_phase(session_id, SessionPhase.REJECTED, code=code_name(rejected.code),
                        why=rejected.message)
        raise rejected

    async def close(self, session_id: str, reason: str = "closed by viewer", *,
                    operator_id: str | None = None, agency: str | None = None) -> None:
        """End an open session, whichever replica opened it: the registry's row says where.

        With ``operator_id`` only a session that operator opened (or, with ``agency``, one of
        that agency's); SessionNotFound for any other, as for one that is closed or unknown.
        The row is closed first, in one statement that also reads it, then the agent is told:
        it ends the session at its expiry anyway if it cannot be reached now.
        """
        record = self._registry.close_session(session_id, datetime.now(UTC), reason,
                                              operator_id=operator_id, agency=agency)
        if record is None:
            raise SessionNotFound(session_id)
        await self.close_at_agent(session_id, str(record["district_id"]), reason,
                                  relay_id=str(record["relay_id"]))

    async def close_at_agent(self, session_id: str, district: str, reason: str, *,
                             relay_id: str | None = None) -> bool:
        """Ask the agent (or the session's cloud relay) to end the session now; True when it
        confirmed (or had none). ``relay_id`` None: as the registry says."""
        close = mqtt_pb2.SessionClose(session_id=session_id, reason=reason)
        self._set_phase(session_id, SessionPhase.CLOSING, reason=reason)
        if relay_id is None:
            relay_id = self.relay_of(session_id)
        try:
            if relay_id:
                response = await self._relay.request_relay(
                    relay_id, mqtt_pb2.SignalRequest(close=close), self._answer_timeout)
            else:
                response = await self._relay.request(
                    district, mqtt_pb2.SignalRequest(close=close), self._answer_timeout)
        except AgentUnavailable:
            # The agent ends it anyway at expiry; the registry records the intent now.
            log.warning("session close not confirmed by agent", session=session_id, district=district)
            self._set_phase(session_id, SessionPhase.CLOSED, confirmed=False)
            return False
        if response.WhichOneof("result") == "error":
            log.info("agent had no such session", session=session_id, message=response.error.message)
        self._set_phase(session_id, SessionPhase.CLOSED, confirmed=True)
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
        if (record is None or record["district_id"] != district_id
                or record["relay_id"]):  # a relay's viewer: only the relay reports
            log.warning("session event for unknown session ignored", district=district_id,
                        session=event.session_id)
            return None
        return self._ended(event)

    def handle_relay_event(self, relay_id: str, payload: bytes) -> mqtt_pb2.SessionEvent | None:
        """A relayed viewer's end, reported by the relay that serves it (and by no other)."""
        try:
            event = mqtt_pb2.SessionEvent.FromString(payload)
        except DecodeError as exc:
            log.warning("rejected malformed relay session event", relay=relay_id, error=str(exc))
            return None
        if event.kind != mqtt_pb2.SessionEvent.KIND_ENDED:
            return None
        if self.relay_of(event.session_id) != relay_id:
            log.warning("relay session event for a session it does not serve ignored",
                        relay=relay_id, session=event.session_id)
            return None
        return self._ended(event)

    def _ended(self, event: mqtt_pb2.SessionEvent) -> mqtt_pb2.SessionEvent | None:
        try:
            ended_at = event.at.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError) as exc:  # outside Timestamp's (or datetime's) range
            log.warning("rejected session event with an invalid time",
                        session=event.session_id, error=str(exc))
            return None
        self._registry.end_session(event.session_id, ended_at, event.reason)
        if self._phases.get(event.session_id) is SessionPhase.OPEN:
            self._set_phase(event.session_id, SessionPhase.CLOSED, reason=event.reason)
        if not self._registry.take_end_report(event.session_id, ended_at, event.bytes_sent,
                                              event.duration_seconds):
            # Every replica receives the agent's report (and QoS 1 may deliver it twice): the
            # first to take it puts it on the record.
            log.info("session end already reported", session=event.session_id)
            return None
        return event
