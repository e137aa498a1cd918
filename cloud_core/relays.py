"""The cloud relay's control half: which relays exist, when a view goes through one, and how a
relay is started (docs/cloud-relay.md).

A relay registers over MQTT on its own topic with a status signed by its own Ed25519 key; the core
holds each relay's public key (config ``[relays]``) and refuses a registration that key does not
verify, or that names another relay. ``RelayDesk.route`` is the one hook in the session path
(``SessionDesk.open``): a view goes to the district's agent as always, unless

- its incident asked for a relay (``IncidentService.Report{relay: true}``), or
- the district's agent refused it because its uplink budget is spent (``UPLINK_FULL``),

and then — for an incident's view, while a relay is registered — to a relay. The first such view
of a camera starts the relay: the core signs a **relay grant** (operator ``system:relay:<id>``,
the camera, the incident, expiring with it), sends ``RelayStart`` to the relay, takes the relay's
offer to the district's agent under that grant (an ordinary, audited session there, off the
budget) and the agent's answer back in ``RelayAnswer``. Further views of the camera for the
incident go to the relay, with the viewer's own grant, which the relay checks. Closing the
incident ends the relay's upstream at the agent like every other session of the incident; the
relay then closes its viewers.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError

from cloud_core.audit import AuditAction, AuditEntry
from cloud_core.exceptions import AgentUnavailable, ConfigError, CoreError, SessionRejected
from cloud_core.grants import GrantSigner
from cloud_core.incidents import IncidentStore
from cloud_core.registry import CameraRecord, Registry
from cloud_core.sessions import OpenedSession, SessionBroker
from cloud_core.signalling import MqttSignalling
from protos import topics
from protos.safetynet.v1 import mqtt_pb2
from runtime.grant import RELAY_AGENCY, GrantClaimsData, relay_operator

log = structlog.get_logger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS incident_relays (
    incident_id TEXT PRIMARY KEY,
    asked_by TEXT NOT NULL,
    asked_at TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class ViewerOffer:
    """One decided, recorded and granted view, on its way to whoever will serve it."""

    camera: CameraRecord
    sdp_offer: str
    grant: bytes
    session_id: str
    expires_at: datetime
    incident_id: str
    record: dict[str, str] = field(default_factory=dict)


Route = Callable[[ViewerOffer, SessionBroker], Awaitable[OpenedSession]]


async def direct_route(view: ViewerOffer, sessions: SessionBroker) -> OpenedSession:
    """The view goes to the camera's agent (the only route when the core runs no relays)."""
    return await sessions.open(view.camera.camera_id, view.sdp_offer, expires_at=view.expires_at,
                               grant=view.grant, session_id=view.session_id, record=view.record,
                               camera=view.camera)


@dataclass(frozen=True)
class ActiveRelay:
    """A camera being relayed: by which relay, for which incident, over which upstream session."""

    relay_id: str
    camera_id: str
    district_id: str
    incident_id: str
    upstream_session_id: str


@dataclass(frozen=True)
class RelayRefusal:
    relay_id: str
    reason: str


def load_relay_keys(files: Mapping[str, Path]) -> dict[str, Ed25519PublicKey]:
    """The relays' public keys from the core's ``[relays]``; ConfigError naming a bad file."""
    keys = {}
    for relay_id, path in files.items():
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(str(path), f"relay {relay_id!r}: cannot read its public key: "
                                         f"{exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(str(path), f"relay {relay_id!r}: not an Ed25519 public key")
        keys[relay_id] = key
    return keys


class RelayDesk:
    """Registered relays, the cameras they relay, and the route of each view."""

    def __init__(self, *, keys: Mapping[str, Ed25519PublicKey], signalling: MqttSignalling,
                 sessions: SessionBroker, signer: GrantSigner, registry: Registry,
                 incidents: IncidentStore,
                 record: Callable[[AuditEntry], Awaitable[object]], timeout: float,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._keys = dict(keys)
        self._signalling = signalling
        self._sessions = sessions
        self._signer = signer
        self._registry = registry
        self._incidents = incidents
        self._record = record  # the access layer's fail-closed audit append
        self._timeout = timeout
        self._clock = clock
        self.online: dict[str, datetime] = {}           # relay id -> its registration's time
        self.refusals: collections.deque[RelayRefusal] = collections.deque(maxlen=64)
        self.changed = asyncio.Condition()
        self._starting: dict[str, asyncio.Lock] = {}
        #: Set by the server: a relayed viewer's end goes on the record like any session's.
        self.on_session_ended: Callable[[mqtt_pb2.SessionEvent], Awaitable[None]] | None = None
        registry.db.schema(SCHEMA)

    # --- incidents that ask for a relay ----------------------------------------------------

    def ask(self, incident_id: str, operator_id: str) -> None:
        """Serve this incident's views through a relay (the Report's ``relay`` option)."""
        self._registry.db.execute(
            "INSERT INTO incident_relays (incident_id, asked_by, asked_at) VALUES (?, ?, ?) "
            "ON CONFLICT (incident_id) DO NOTHING",
            [incident_id, operator_id, self._clock().isoformat()])
        log.info("incident asks for a cloud relay", incident=incident_id, by=operator_id)

    def asked_for(self, incident_id: str) -> bool:
        return self._registry.db.execute(
            "SELECT 1 FROM incident_relays WHERE incident_id = ?", [incident_id]).fetchone() \
            is not None

    # --- the route of one view -------------------------------------------------------------

    async def route(self, view: ViewerOffer, sessions: SessionBroker) -> OpenedSession:
        """To the relay when the incident asked or the district's uplink is full, else direct."""
        if view.incident_id and self.asked_for(view.incident_id):
            relayed = await self._relay_for(view)
            if relayed is not None:
                return await self._via(relayed, view)
        try:
            return await direct_route(view, sessions)
        except SessionRejected as exc:
            if exc.code != mqtt_pb2.SIGNAL_ERROR_UPLINK_FULL or not view.incident_id:
                raise
            relayed = await self._relay_for(view)
            if relayed is None:
                raise SessionRejected(exc.code, f"{exc.message}, and no cloud relay can take "
                                                "this camera") from exc
            return await self._via(relayed, view)

    async def _via(self, relayed: ActiveRelay, view: ViewerOffer) -> OpenedSession:
        return await self._sessions.open(
            view.camera.camera_id, view.sdp_offer, expires_at=view.expires_at, grant=view.grant,
            session_id=view.session_id, record=view.record, relay_id=relayed.relay_id,
            camera=view.camera)

    async def _relay_for(self, view: ViewerOffer) -> ActiveRelay | None:
        """The camera's relay for this incident, started now if need be; None if there is none."""
        camera_id = view.camera.camera_id
        lock = self._starting.setdefault(camera_id, asyncio.Lock())
        async with lock:
            active = self._current(camera_id)
            if active is not None:
                return active if active.incident_id == view.incident_id else None
            relay_id = self._least_busy()
            if relay_id is None:
                log.warning("no cloud relay registered: the view goes direct", camera=camera_id,
                            incident=view.incident_id)
                return None
            try:
                return await self._start(relay_id, view)
            except CoreError as exc:
                log.warning("cloud relay did not start: the view goes direct", relay=relay_id,
                            camera=camera_id, error=str(exc))
                return None

    @property
    def active(self) -> dict[str, ActiveRelay]:
        """Camera id -> the relay serving it: every open relay upstream of a registered relay,
        read from the registry, so each replica sees the relays any replica started."""
        return {active.camera_id: active for active in
                map(_active_relay, self._registry.open_relay_upstreams())
                if active.relay_id in self.online}

    def _current(self, camera_id: str) -> ActiveRelay | None:
        """The camera's relay while its upstream session is open and its relay registered."""
        for active in map(_active_relay, self._registry.open_relay_upstreams(camera_id)):
            if active.relay_id in self.online:
                return active
        return None

    def _least_busy(self) -> str | None:
        if not self.online:
            return None
        busy = collections.Counter(a.relay_id for a in self.active.values())
        return min(sorted(self.online), key=lambda r: busy[r])

    async def _start(self, relay_id: str, view: ViewerOffer) -> ActiveRelay:
        """Relay grant, RelayStart, the upstream session at the agent, RelayAnswer."""
        camera = view.camera
        stored = self._incidents.get(view.incident_id)
        expires_at = stored.incident.expires_at if stored is not None else view.expires_at
        now = self._clock()
        upstream_id = SessionBroker.new_session_id()
        grant = self._signer.sign(GrantClaimsData(
            session_id=upstream_id, camera_id=camera.camera_id, district_id=camera.district_id,
            operator_id=relay_operator(relay_id), agency=RELAY_AGENCY,
            incident_id=view.incident_id, purpose="cloud relay for the incident's viewers",
            not_before=now, expires_at=expires_at))
        start = mqtt_pb2.RelayStart(camera_id=camera.camera_id, district_id=camera.district_id,
                                    incident_id=view.incident_id, upstream_session_id=upstream_id)
        start.expires_at.FromDatetime(expires_at)
        response = await self._signalling.request_relay(
            relay_id, mqtt_pb2.SignalRequest(relay_start=start), self._timeout)
        if response.WhichOneof("result") != "relay_offer":
            raise SessionRejected(response.error.code, f"relay {relay_id!r} refused to start: "
                                                       f"{response.error.message}")
        opened = await self._sessions.open(
            camera.camera_id, response.relay_offer, expires_at=expires_at, grant=grant,
            session_id=upstream_id,
            record={"operator_id": relay_operator(relay_id), "agency": RELAY_AGENCY,
                    "incident_id": view.incident_id, "basis": "relay"})
        answer = mqtt_pb2.RelayAnswer(camera_id=camera.camera_id, upstream_session_id=upstream_id,
                                      sdp_answer=opened.sdp_answer)
        try:
            response = await self._signalling.request_relay(
                relay_id, mqtt_pb2.SignalRequest(relay_answer=answer), self._timeout)
        except AgentUnavailable:
            await self._sessions.close_at_agent(upstream_id, camera.district_id, "relay lost")
            raise
        if response.WhichOneof("result") == "error":
            await self._sessions.close_at_agent(upstream_id, camera.district_id,
                                                "relay did not start")
            raise SessionRejected(response.error.code, response.error.message)
        await self._record(AuditEntry(
            action=AuditAction.SESSION_OPEN, operator_id=relay_operator(relay_id),
            agency=RELAY_AGENCY, camera_ids=(camera.camera_id,), incident_id=view.incident_id,
            purpose="cloud relay", period_start=now, period_end=opened.expires_at,
            reason="the incident's viewers are served by a cloud relay",
            details={"session_id": upstream_id, "district_id": camera.district_id,
                     "basis": "relay", "relay_id": relay_id, "via": "relay upstream"}))
        active = ActiveRelay(relay_id, camera.camera_id, camera.district_id, view.incident_id,
                             upstream_id)  # on the registry already: its upstream session's row
        log.info("cloud relay started", relay=relay_id, camera=camera.camera_id,
                 incident=view.incident_id, upstream=upstream_id)
        await self._changed()
        return active

    # --- messages from relays --------------------------------------------------------------

    async def handle(self, kind: topics.Kind, relay_id: str, payload: bytes) -> None:
        """One message on a relay's topic (``CoreServer`` routes them here)."""
        if kind is topics.Kind.RELAY_STATUS:
            await self._status(relay_id, payload)
        elif relay_id not in self.online:
            log.warning("message from an unregistered relay ignored", relay=relay_id,
                        kind=kind.value)
        elif kind is topics.Kind.SIGNAL_RESPONSE:
            self._signalling.handle_relay_response(relay_id, payload)
        elif kind is topics.Kind.SESSION_EVENTS:
            event = self._sessions.handle_relay_event(relay_id, payload)
            if event is not None and self.on_session_ended is not None:
                await self.on_session_ended(event)

    async def _status(self, relay_id: str, payload: bytes) -> None:
        if not payload:
            return  # a retained status cleared
        problem, status = self._verify(relay_id, payload)
        if problem is not None or status is None:
            self.refusals.append(RelayRefusal(relay_id, problem or "no status"))
            log.warning("relay registration refused", relay=relay_id, reason=problem)
        elif status.online:
            self.online[relay_id] = self._clock()
            log.info("relay registered", relay=relay_id)
        else:
            self.online.pop(relay_id, None)
            self._forget(relay_id)
            log.info("relay offline", relay=relay_id)
        await self._changed()

    def _verify(self, relay_id: str, payload: bytes) -> tuple[str | None, mqtt_pb2.RelayStatus | None]:
        """Why the registration is refused (None: accepted), and its status."""
        key = self._keys.get(relay_id)
        if key is None:
            return f"relay {relay_id!r} is not one of this core's relays (no key in [relays])", None
        try:
            signed = mqtt_pb2.SignedRelayStatus.FromString(payload)
            status = mqtt_pb2.RelayStatus.FromString(signed.status)
        except DecodeError:
            return "malformed relay status: not a SignedRelayStatus", None
        try:
            key.verify(signed.signature, signed.status)
        except InvalidSignature:
            return f"the status is not signed by relay {relay_id!r}'s key", None
        if status.relay_id != relay_id:
            return (f"the status names relay {status.relay_id!r} on relay {relay_id!r}'s "
                    "topic"), None
        return None, status

    def _forget(self, relay_id: str) -> None:
        """A relay went away: its cameras are no longer relayed (``active`` counts registered
        relays only; their upstreams end at the agents when the incidents do; the viewers'
        sessions are gone with the relay)."""
        now = self._clock()
        for session in self._registry.open_sessions():
            if session["relay_id"] == relay_id:
                self._registry.end_session(str(session["session_id"]), now, "relay offline")

    async def _changed(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_until(self, predicate: Callable[[RelayDesk], bool], timeout: float) -> None:
        """Wait until ``predicate(self)`` holds; re-checked after each relay status."""
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: predicate(self))


def _active_relay(upstream: Mapping[str, object]) -> ActiveRelay:
    """The relay an upstream session's row names (its operator is the relay's identity)."""
    return ActiveRelay(
        relay_id=str(upstream["operator_id"]).removeprefix(f"{RELAY_AGENCY}:"),
        camera_id=str(upstream["camera_id"]), district_id=str(upstream["district_id"]),
        incident_id=str(upstream["incident_id"]),
        upstream_session_id=str(upstream["session_id"]))
