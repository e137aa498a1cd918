"""The access policy of the five safety services: who may view which camera, when, and why.

Everything here is pure decision code: no I/O except reading the policy file in
:func:`load_policy`, no clock (``now`` is always passed in), no randomness except the default
identifiers of new incidents and break-glass windows. Every datetime is timezone-aware UTC.

The policy itself (services, incident types, agencies, radii, time boxes, legal bases) lives in
one TOML file, ``cloud_core/policy.toml``, whose schema is documented at its top. Access is
default-deny; :func:`decide_view` allows a view on exactly one of three bases:

* ``district-own``: the camera's own district control centre (agency ``district:<id>``), standing
  access without an incident;
* ``incident``: an open incident that admits the operator's agency, with the camera inside the
  incident's radius, within its time box;
* ``break-glass``: a supervisor's short (at most 30 minutes), written-reason emergency window.

Only enabled operators with role ``operator`` or ``supervisor`` may view video. Callers audit
every :class:`Decision`; this module does not.
"""

from __future__ import annotations

import functools
import math
import re
import tomllib
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import structlog

from cloud_core.exceptions import AccessDenied, PolicyError

log = structlog.get_logger(__name__)

EARTH_RADIUS_M: Final = 6_371_008.8
"""Mean Earth radius (IUGG), the sphere :func:`distance_m` measures on."""

BREAK_GLASS_LIMIT: Final = timedelta(minutes=30)
"""Hard ceiling of a break-glass window; the policy file may only shorten it."""

DISTRICT_AGENCY_PREFIX: Final = "district:"

SCHEMA_VERSION: Final = 1

_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]*")
_BARE_KEY_RE: Final = re.compile(r"[A-Za-z0-9_-]+")


class Role(StrEnum):
    """What an operator may do. Only ``operator`` and ``supervisor`` view video."""

    OPERATOR = "operator"
    SUPERVISOR = "supervisor"
    AUDITOR = "auditor"
    ADMIN = "admin"


VIEW_ROLES: Final = frozenset({Role.OPERATOR, Role.SUPERVISOR})


class Basis(StrEnum):
    """On what ground a view was allowed (``NONE`` for a denial)."""

    INCIDENT = "incident"
    DISTRICT_OWN = "district-own"
    BREAK_GLASS = "break-glass"
    NONE = "none"


def district_agency(district_id: str) -> str:
    """The agency id of a district's own control centre, e.g. ``district:gangnam``."""
    return f"{DISTRICT_AGENCY_PREFIX}{district_id}"


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle (haversine) distance in metres between two WGS84 points, in degrees."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlambda = math.radians(lon2 - lon1)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


# Domain ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operator:
    """A person at an agency console. ``agency`` is a policy agency or ``district:<id>``."""

    operator_id: str
    name: str
    agency: str
    role: Role
    enabled: bool = True

    def __post_init__(self) -> None:
        _require_text("operator_id", self.operator_id)
        _require_text("agency", self.agency)
        try:
            object.__setattr__(self, "role", Role(self.role))
        except ValueError:
            roles = ", ".join(r.value for r in Role)
            raise ValueError(f"unknown role {self.role!r}; roles are: {roles}") from None


@dataclass(frozen=True, slots=True)
class CameraPlace:
    """Where a camera is and which district owns it: all the policy needs of a camera."""

    camera_id: str
    district_id: str
    lat: float
    lon: float

    def __post_init__(self) -> None:
        _require_text("camera_id", self.camera_id)
        _require_text("district_id", self.district_id)
        _require_coordinates(self.lat, self.lon)


@dataclass(frozen=True, slots=True, kw_only=True)
class Incident:
    """An incident-scoped access window: a service, a place and radius, a time box, a purpose."""

    incident_id: str
    incident_type: str
    service: str
    lat: float
    lon: float
    radius_m: float
    agencies: frozenset[str]
    opened_at: datetime
    expires_at: datetime
    closed_at: datetime | None = None
    legal_basis: str
    purpose: str
    occurred_at: datetime | None = None
    external_ref: str = ""

    def __post_init__(self) -> None:
        _require_text("incident_id", self.incident_id)
        _require_coordinates(self.lat, self.lon)
        if not (math.isfinite(self.radius_m) and self.radius_m > 0):
            raise ValueError(f"radius_m must be a positive number of metres, not {self.radius_m}")
        object.__setattr__(self, "agencies", frozenset(self.agencies))
        for name in ("opened_at", "expires_at", "closed_at", "occurred_at"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _require_utc(name, value))
        if self.expires_at <= self.opened_at:
            raise ValueError("expires_at must be after opened_at")
        if self.closed_at is not None and self.closed_at < self.opened_at:
            raise ValueError("closed_at must not precede opened_at")

    def is_closed(self, now: datetime) -> bool:
        """Whether the incident had been closed at ``now``."""
        return self.closed_at is not None and self.closed_at <= now

    def close(self, now: datetime) -> Incident:
        """This incident, closed at ``now`` (access ends for every session it backs)."""
        if self.closed_at is not None:
            raise ValueError(f"incident {self.incident_id} is already closed")
        return replace(self, closed_at=_require_utc("now", now))


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakGlass:
    """A supervisor's emergency access window without an incident, at most 30 minutes long.

    Its scope is a set of cameras, whole districts, or both.
    """

    breakglass_id: str
    operator_id: str
    reason: str
    started_at: datetime
    expires_at: datetime
    camera_ids: frozenset[str] = field(default_factory=frozenset)
    district_ids: frozenset[str] = field(default_factory=frozenset)
    stopped_at: datetime | None = None

    def __post_init__(self) -> None:
        _require_text("breakglass_id", self.breakglass_id)
        _require_text("operator_id", self.operator_id)
        object.__setattr__(self, "camera_ids", frozenset(self.camera_ids))
        object.__setattr__(self, "district_ids", frozenset(self.district_ids))
        if not self.camera_ids and not self.district_ids:
            raise ValueError("a break-glass window needs at least one camera or district")
        for name in ("started_at", "expires_at", "stopped_at"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _require_utc(name, value))
        if self.expires_at <= self.started_at:
            raise ValueError("expires_at must be after started_at")
        if self.expires_at - self.started_at > BREAK_GLASS_LIMIT:
            raise ValueError("a break-glass window lasts at most 30 minutes")
        if self.stopped_at is not None and self.stopped_at < self.started_at:
            raise ValueError("stopped_at must not precede started_at")

    def covers(self, camera: CameraPlace) -> bool:
        """Whether ``camera`` is inside this window's scope."""
        return camera.camera_id in self.camera_ids or camera.district_id in self.district_ids

    def stop(self, now: datetime) -> BreakGlass:
        """This window, stopped early at ``now``."""
        if self.stopped_at is not None:
            raise ValueError(f"break-glass {self.breakglass_id} is already stopped")
        return replace(self, stopped_at=_require_utc("now", now))


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The outcome of one access decision, as the audit log records it.

    ``expires_at`` is when the access ends (None when denied). ``reason`` says why, specifically.
    """

    allowed: bool
    reason: str
    expires_at: datetime | None
    basis: Basis
    purpose: str = ""
    legal_basis: str = ""
    incident_id: str | None = None
    breakglass_id: str | None = None

    @classmethod
    def deny(cls, reason: str) -> Decision:
        """A denial with ``reason``."""
        return cls(allowed=False, reason=reason, expires_at=None, basis=Basis.NONE)


# Policy ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ServicePolicy:
    """One safety service as the policy file defines it.

    ``incident_types`` are all the types the service serves; when ``incident_types_from`` names
    another service they are that service's types, and this one opens only when asked by name.
    """

    service_id: str
    title: str
    agencies: frozenset[str]
    incident_types: frozenset[str]
    incident_types_from: str | None
    default_radius_m: float
    max_radius_m: float
    time_box: timedelta
    facilities: bool
    purpose: str
    legal_basis: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StandingAccess:
    """A district control centre's access to its own cameras, without an incident."""

    session: timedelta
    purpose: str
    legal_basis: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakGlassRules:
    """Limits on break-glass windows."""

    max_duration: timedelta
    min_reason_chars: int
    purpose_prefix: str
    legal_basis: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EvidenceRules:
    """``[evidence]``: who may preserve clips, how long a clip is kept, how long it may be."""

    roles: frozenset[Role] = frozenset({Role.SUPERVISOR, Role.OPERATOR})
    retention_days: int = 30
    max_clip_seconds: int = 600


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """The validated policy file. Build it with :func:`load_policy` or :meth:`Policy.default`."""

    source: str
    agencies: Mapping[str, str]
    services: Mapping[str, ServicePolicy]
    refused_incident_types: Mapping[str, str]
    standing: StandingAccess
    break_glass: BreakGlassRules
    evidence: EvidenceRules = field(default_factory=lambda: EvidenceRules())

    @classmethod
    def default(cls) -> Policy:
        """The policy shipped with the package (``cloud_core/policy.toml``)."""
        return _default_policy()

    @property
    def incident_types(self) -> frozenset[str]:
        """Every incident type some service serves."""
        return frozenset(t for s in self.services.values() for t in s.incident_types)

    def is_known_agency(self, agency: str) -> bool:
        """Whether ``agency`` is a listed agency or a district control centre."""
        return agency in self.agencies or (
            agency.startswith(DISTRICT_AGENCY_PREFIX) and len(agency) > len(DISTRICT_AGENCY_PREFIX)
        )

    def service_for(self, incident_type: str, service: str | None = None) -> ServicePolicy:
        """The service an incident of ``incident_type`` opens (or the named ``service``).

        Raises AccessDenied for a refused type (e.g. a non-violent crime) and ValueError for a
        type or service the policy does not know.
        """
        if incident_type in self.refused_incident_types:
            raise AccessDenied(
                f"incident type {incident_type!r} does not justify access to video: "
                f"{self.refused_incident_types[incident_type]}"
            )
        if service is not None:
            chosen = self.services.get(service)
            if chosen is None:
                raise ValueError(
                    f"unknown service {service!r}; services are: {self._service_list()}"
                )
            if incident_type not in chosen.incident_types:
                raise ValueError(f"incident type {incident_type!r} is not served by {chosen.title}")
            return chosen
        for candidate in self.services.values():
            if candidate.incident_types_from is None and incident_type in candidate.incident_types:
                return candidate
        raise ValueError(f"unknown incident type {incident_type!r}; see {self.source}")

    def open_incident(
        self,
        incident_type: str,
        lat: float,
        lon: float,
        radius_m: float | None,
        occurred_at: datetime,
        now: datetime,
        external_ref: str,
        legal_basis: str | None = None,
        *,
        service: str | None = None,
        incident_id: str | None = None,
    ) -> Incident:
        """Open an incident-scoped access window for ``incident_type`` at (``lat``, ``lon``).

        The radius defaults to the service's and is capped at its maximum; the window lasts the
        service's time box from ``now``; the legal basis defaults to the service's. ``service``
        picks a service that shares its types with another (112 emergency dispatch).

        Raises AccessDenied for refused incident types and ValueError for invalid input.
        """
        now = _require_utc("now", now)
        occurred_at = _require_utc("occurred_at", occurred_at)
        if occurred_at > now + timedelta(minutes=1):
            raise ValueError(f"occurred_at {occurred_at.isoformat()} is in the future")
        _require_coordinates(lat, lon)
        chosen = self.service_for(incident_type, service)
        radius = chosen.default_radius_m if radius_m is None else float(radius_m)
        if not (math.isfinite(radius) and radius > 0):
            raise ValueError(f"radius_m must be a positive number of metres, not {radius_m}")
        if radius > chosen.max_radius_m:
            log.info(
                "incident.radius_capped",
                service=chosen.service_id,
                asked_m=radius,
                max_m=chosen.max_radius_m,
            )
            radius = chosen.max_radius_m
        if legal_basis is not None and not legal_basis.strip():
            raise ValueError("legal_basis, when given, must not be blank")
        return Incident(
            incident_id=incident_id or _new_id("INC", now),
            incident_type=incident_type,
            service=chosen.service_id,
            lat=lat,
            lon=lon,
            radius_m=radius,
            agencies=chosen.agencies,
            opened_at=now,
            expires_at=now + chosen.time_box,
            legal_basis=legal_basis.strip() if legal_basis is not None else chosen.legal_basis,
            purpose=chosen.purpose,
            occurred_at=occurred_at,
            external_ref=external_ref,
        )

    def _service_list(self) -> str:
        return ", ".join(sorted(self.services))


# Decisions ---------------------------------------------------------------------------------------


def decide_view(
    policy: Policy,
    operator: Operator,
    camera: CameraPlace,
    incident: Incident | None,
    now: datetime,
    breakglass: BreakGlass | None = None,
) -> Decision:
    """Decide whether ``operator`` may view ``camera`` at ``now``. Default deny.

    Bases are tried in order: the district's own camera, the incident, the break-glass window.
    A denial's reason names every basis that was offered and why it failed. The caller must
    have resolved the camera already (an unknown camera never reaches this function).
    """
    now = _require_utc("now", now)
    if not operator.enabled:
        return Decision.deny(f"operator {operator.operator_id} is disabled")
    if operator.role not in VIEW_ROLES:
        return Decision.deny(f"role {operator.role} may not view video")

    if operator.agency == district_agency(camera.district_id):
        return Decision(
            allowed=True,
            reason=f"standing access of district {camera.district_id} to its own cameras",
            expires_at=now + policy.standing.session,
            basis=Basis.DISTRICT_OWN,
            purpose=policy.standing.purpose,
            legal_basis=policy.standing.legal_basis,
        )

    refusals: list[str] = []
    if incident is not None:
        problem = _incident_problem(policy, operator, camera, incident, now)
        if problem is None:
            return Decision(
                allowed=True,
                reason=f"incident {incident.incident_id} admits agency {operator.agency} "
                f"to this camera",
                expires_at=incident.expires_at,
                basis=Basis.INCIDENT,
                purpose=incident.purpose,
                legal_basis=incident.legal_basis,
                incident_id=incident.incident_id,
            )
        refusals.append(problem)
    if breakglass is not None:
        problem = _break_glass_problem(operator, camera, breakglass, now)
        if problem is None:
            return Decision(
                allowed=True,
                reason=f"break-glass {breakglass.breakglass_id} of supervisor "
                f"{operator.operator_id}",
                expires_at=breakglass.expires_at,
                basis=Basis.BREAK_GLASS,
                purpose=f"{policy.break_glass.purpose_prefix}: {breakglass.reason}",
                legal_basis=policy.break_glass.legal_basis,
                breakglass_id=breakglass.breakglass_id,
            )
        refusals.append(problem)
    if not refusals:
        if operator.agency.startswith(DISTRICT_AGENCY_PREFIX):
            refusals.append(
                f"agency {operator.agency} has standing access only to its own district's "
                f"cameras; camera {camera.camera_id} belongs to district {camera.district_id} "
                f"and no incident was given"
            )
        else:
            refusals.append(
                f"agency {operator.agency} has no standing access to district cameras; "
                f"viewing needs an open incident or a break-glass window"
            )
    return Decision.deny("; ".join(refusals))


def start_break_glass(
    policy: Policy,
    operator: Operator,
    camera_ids: Iterable[str],
    reason: str,
    now: datetime,
    minutes: int,
    *,
    district_ids: Iterable[str] = (),
    breakglass_id: str | None = None,
) -> BreakGlass:
    """Open a supervisor's break-glass window over ``camera_ids`` and/or ``district_ids``.

    The window starts at ``now`` and lasts ``minutes``, capped at the policy's maximum (never
    more than 30). Raises AccessDenied unless ``operator`` is an enabled supervisor, and
    ValueError without a written reason of the policy's minimum length or without a scope.
    """
    now = _require_utc("now", now)
    if not operator.enabled:
        raise AccessDenied(f"operator {operator.operator_id} is disabled")
    if operator.role is not Role.SUPERVISOR:
        raise AccessDenied(
            f"only a supervisor may break the glass; operator {operator.operator_id} "
            f"has role {operator.role}"
        )
    written = " ".join(reason.split())
    if len(written) < policy.break_glass.min_reason_chars:
        raise ValueError(
            f"break-glass needs a written reason of at least "
            f"{policy.break_glass.min_reason_chars} characters, got {len(written)}"
        )
    if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes <= 0:
        raise ValueError(f"minutes must be a positive whole number, not {minutes!r}")
    duration = timedelta(minutes=minutes)
    if duration > policy.break_glass.max_duration:
        log.info(
            "break_glass.duration_capped",
            operator=operator.operator_id,
            asked_minutes=minutes,
            max_minutes=policy.break_glass.max_duration // timedelta(minutes=1),
        )
        duration = policy.break_glass.max_duration
    window = BreakGlass(
        breakglass_id=breakglass_id or _new_id("BG", now),
        operator_id=operator.operator_id,
        reason=written,
        started_at=now,
        expires_at=now + duration,
        camera_ids=frozenset(camera_ids),
        district_ids=frozenset(district_ids),
    )
    log.warning(
        "break_glass.started",
        breakglass=window.breakglass_id,
        operator=operator.operator_id,
        agency=operator.agency,
        cameras=len(window.camera_ids),
        districts=sorted(window.district_ids),
        expires_at=window.expires_at.isoformat(),
    )
    return window


def _incident_problem(
    policy: Policy, operator: Operator, camera: CameraPlace, incident: Incident, now: datetime
) -> str | None:
    """Why ``incident`` does not let ``operator`` view ``camera`` at ``now`` (None: it does)."""
    if incident.is_closed(now):
        return f"incident {incident.incident_id} is closed"
    if now < incident.opened_at:
        return (
            f"incident {incident.incident_id} is not open yet "
            f"(opens at {incident.opened_at.isoformat()})"
        )
    if now >= incident.expires_at:
        return f"incident {incident.incident_id} expired at {incident.expires_at.isoformat()}"
    if operator.agency not in incident.agencies:
        service = policy.services.get(incident.service)
        title = service.title if service is not None else incident.service
        return f"agency {operator.agency} is not admitted to {title} incidents"
    distance = distance_m(incident.lat, incident.lon, camera.lat, camera.lon)
    if distance > incident.radius_m:
        far, radius = _metres(distance), _metres(incident.radius_m)
        if far == radius:
            far = f"{distance:.1f}"
        return f"camera is {far} m from the incident, outside its {radius} m radius"
    return None


def _break_glass_problem(
    operator: Operator, camera: CameraPlace, window: BreakGlass, now: datetime
) -> str | None:
    """Why ``window`` does not let ``operator`` view ``camera`` at ``now`` (None: it does)."""
    if window.operator_id != operator.operator_id:
        return f"break-glass {window.breakglass_id} belongs to another operator"
    if operator.role is not Role.SUPERVISOR:
        return f"break-glass needs role supervisor; operator has role {operator.role}"
    if window.stopped_at is not None and window.stopped_at <= now:
        return f"break-glass {window.breakglass_id} was stopped"
    if now < window.started_at:
        return f"break-glass {window.breakglass_id} has not started yet"
    if now >= window.expires_at:
        return f"break-glass {window.breakglass_id} expired at {window.expires_at.isoformat()}"
    if not window.covers(camera):
        return f"break-glass {window.breakglass_id} does not cover camera {camera.camera_id}"
    return None


def _metres(value: float) -> str:
    return f"{value:.0f}"


def _new_id(prefix: str, now: datetime) -> str:
    return f"{prefix}-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def _require_utc(name: str, value: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value.isoformat()}")
    return value.astimezone(UTC)


def _require_text(name: str, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")


def _require_coordinates(lat: float, lon: float) -> None:
    if not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
        raise ValueError(f"latitude {lat} is outside -90..90")
    if not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
        raise ValueError(f"longitude {lon} is outside -180..180")


# Loading the policy file -------------------------------------------------------------------------


def load_policy(path: str | Path) -> Policy:
    """Read and validate the policy file at ``path``.

    Raises PolicyError naming the file and the exact key and problem: unreadable file, invalid
    TOML, missing or unknown key, wrong type, out-of-range value, unknown agency, an incident
    type served by two services or both served and refused.
    """
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PolicyError(source, f"cannot be read: {exc.strerror or exc}") from exc
    policy = parse_policy(raw, source)
    log.info(
        "policy.loaded",
        source=source,
        services=len(policy.services),
        incident_types=len(policy.incident_types),
    )
    return policy


def parse_policy(raw: bytes | str, source: str) -> Policy:
    """Validate policy file contents ``raw``; ``source`` names it in errors."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise PolicyError(source, f"is not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(source, f"is not valid TOML: {exc}") from exc
    return _PolicyReader(source).read(document)


@functools.cache
def _default_policy() -> Policy:
    resource = resources.files(__package__ or "cloud_core").joinpath("policy.toml")
    return parse_policy(resource.read_bytes(), str(resource))


class _Table:
    """One TOML table being read: typed getters that name the full key path on failure."""

    def __init__(self, source: str, path: str, data: Mapping[str, Any]) -> None:
        self._source = source
        self._path = path
        self._data = data
        self._read: set[str] = set()

    def error(self, key: str | None, problem: str) -> PolicyError:
        where = self.key_path(key) if key is not None else (self._path or "top level")
        return PolicyError(self._source, f"{where}: {problem}")

    def key_path(self, key: str) -> str:
        shown = key if _BARE_KEY_RE.fullmatch(key) else f'"{key}"'
        return f"{self._path}.{shown}" if self._path else shown

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def has(self, key: str) -> bool:
        return key in self._data

    def _get(self, key: str) -> Any:
        if key not in self._data:
            raise self.error(key, "is missing")
        self._read.add(key)
        return self._data[key]

    def table(self, key: str) -> _Table:
        value = self._get(key)
        if not isinstance(value, dict):
            raise self.error(key, f"must be a table, not {_toml_type(value)}")
        return _Table(self._source, self.key_path(key), value)

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, not {_toml_type(value)}")
        if not value.strip():
            raise self.error(key, "must not be empty")
        return value.strip()

    def name(self, key: str) -> str:
        value = self.text(key)
        if not _NAME_RE.fullmatch(value):
            raise self.error(key, f"{value!r} is not a valid id (a-z, 0-9 and '-')")
        return value

    def integer(self, key: str, *, minimum: int, maximum: int | None = None) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, not {_toml_type(value)}")
        if value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self.error(key, f"must be at most {maximum}, got {value}")
        return value

    def positive_number(self, key: str) -> float:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"must be a number, not {_toml_type(value)}")
        if not math.isfinite(value) or value <= 0:
            raise self.error(key, f"must be a positive number, got {value}")
        return float(value)

    def boolean(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {_toml_type(value)}")
        return value

    def names(self, key: str) -> list[str]:
        value = self._get(key)
        if not isinstance(value, list):
            raise self.error(key, f"must be a list of strings, not {_toml_type(value)}")
        if not value:
            raise self.error(key, "must not be empty")
        seen: set[str] = set()
        for index, item in enumerate(value):
            where = f"{self.key_path(key)}[{index}]"
            if not isinstance(item, str):
                raise PolicyError(
                    self._source, f"{where}: must be a string, not {_toml_type(item)}"
                )
            if not _NAME_RE.fullmatch(item):
                raise PolicyError(
                    self._source, f"{where}: {item!r} is not a valid id (a-z, 0-9 and '-')"
                )
            if item in seen:
                raise PolicyError(self._source, f"{where}: {item!r} is listed twice")
            seen.add(item)
        return list(value)

    def finish(self) -> None:
        """Refuse keys nobody read: a misspelt key must not silently weaken the policy."""
        for key in self._data:
            if key not in self._read:
                raise self.error(key, "is not a known key")


class _PolicyReader:
    """Turns a parsed TOML document into a validated :class:`Policy`."""

    def __init__(self, source: str) -> None:
        self._source = source

    def read(self, document: Mapping[str, Any]) -> Policy:
        top = _Table(self._source, "", document)
        top.integer("schema", minimum=SCHEMA_VERSION, maximum=SCHEMA_VERSION)
        agencies = self._agencies(top.table("agencies"))
        standing = self._standing(top.table("standing_access"))
        break_glass = self._break_glass(top.table("break_glass"))
        services = self._services(top.table("services"), agencies)
        refused = self._refused(top.table("refused_incident_types"), services)
        evidence = self._evidence(top.table("evidence")) if top.has("evidence") else EvidenceRules()
        top.finish()
        return Policy(
            source=self._source,
            agencies=MappingProxyType(agencies),
            services=MappingProxyType(services),
            refused_incident_types=MappingProxyType(refused),
            standing=standing,
            break_glass=break_glass,
            evidence=evidence,
        )

    def _evidence(self, table: _Table) -> EvidenceRules:
        roles = frozenset(Role(r) for r in table.names("roles")) if table.has("roles") else None
        if roles is not None and not roles <= {Role.OPERATOR, Role.SUPERVISOR}:
            raise table.error("roles", "only operator and supervisor may preserve evidence")
        rules = EvidenceRules(
            roles=roles or EvidenceRules().roles,
            retention_days=table.integer("retention_days", minimum=1, maximum=3650),
            max_clip_seconds=table.integer("max_clip_seconds", minimum=1, maximum=86_400))
        table.finish()
        return rules

    def _agencies(self, table: _Table) -> dict[str, str]:
        agencies: dict[str, str] = {}
        if not table:
            raise table.error(None, "must list at least one agency")
        for agency in table:
            if agency.startswith(DISTRICT_AGENCY_PREFIX):
                raise table.error(
                    agency, "district control centres are implicit agencies; do not list them"
                )
            if not _NAME_RE.fullmatch(agency):
                raise table.error(agency, "is not a valid agency id (a-z, 0-9 and '-')")
            agencies[agency] = table.text(agency)
        table.finish()
        return agencies

    def _standing(self, table: _Table) -> StandingAccess:
        standing = StandingAccess(
            session=timedelta(minutes=table.integer("session_minutes", minimum=1)),
            purpose=table.text("purpose"),
            legal_basis=table.text("legal_basis"),
        )
        table.finish()
        return standing

    def _break_glass(self, table: _Table) -> BreakGlassRules:
        ceiling = BREAK_GLASS_LIMIT // timedelta(minutes=1)
        rules = BreakGlassRules(
            max_duration=timedelta(
                minutes=table.integer("max_minutes", minimum=1, maximum=ceiling)
            ),
            min_reason_chars=table.integer("min_reason_chars", minimum=1),
            purpose_prefix=table.text("purpose_prefix"),
            legal_basis=table.text("legal_basis"),
        )
        table.finish()
        return rules

    def _services(self, table: _Table, agencies: Mapping[str, str]) -> dict[str, ServicePolicy]:
        if not table:
            raise table.error(None, "must define at least one service")
        services: dict[str, ServicePolicy] = {}
        borrowers: dict[str, _Table] = {}
        owner_of_type: dict[str, str] = {}
        for service_id in table:
            if not _NAME_RE.fullmatch(service_id):
                raise table.error(service_id, "is not a valid service id (a-z, 0-9 and '-')")
            entry = table.table(service_id)
            listed_agencies = entry.names("agencies")
            for index, agency in enumerate(listed_agencies):
                if agency not in agencies:
                    raise PolicyError(
                        self._source,
                        f"{entry.key_path('agencies')}[{index}]: unknown agency {agency!r} "
                        f"(not listed in [agencies])",
                    )
            borrowed_from: str | None = None
            own_types: list[str] = []
            if entry.has("incident_types") and entry.has("incident_types_from"):
                raise entry.error(
                    "incident_types_from", "give either incident_types or incident_types_from"
                )
            if entry.has("incident_types_from"):
                borrowed_from = entry.name("incident_types_from")
                borrowers[service_id] = entry
            else:
                own_types = entry.names("incident_types")
                for index, incident_type in enumerate(own_types):
                    if incident_type in owner_of_type:
                        raise PolicyError(
                            self._source,
                            f"{entry.key_path('incident_types')}[{index}]: incident type "
                            f"{incident_type!r} is already served by service "
                            f"{owner_of_type[incident_type]!r}",
                        )
                    owner_of_type[incident_type] = service_id
            default_radius = entry.positive_number("default_radius_m")
            max_radius = entry.positive_number("max_radius_m")
            if max_radius < default_radius:
                raise entry.error(
                    "max_radius_m",
                    f"must be at least default_radius_m ({default_radius:g}), got {max_radius:g}",
                )
            services[service_id] = ServicePolicy(
                service_id=service_id,
                title=entry.text("title"),
                agencies=frozenset(listed_agencies),
                incident_types=frozenset(own_types),
                incident_types_from=borrowed_from,
                default_radius_m=default_radius,
                max_radius_m=max_radius,
                time_box=timedelta(minutes=entry.integer("time_box_minutes", minimum=1)),
                facilities=entry.boolean("facilities"),
                purpose=entry.text("purpose"),
                legal_basis=entry.text("legal_basis"),
            )
            entry.finish()
        table.finish()

        # A borrowing service serves the types its lender lists itself (no chains, no loops).
        for service_id, entry in borrowers.items():
            lender_id = services[service_id].incident_types_from
            lender = services.get(lender_id or "")
            if lender is None or lender.incident_types_from is not None:
                problem = (
                    "a service cannot borrow its own incident types"
                    if lender_id == service_id
                    else f"unknown service {lender_id!r}"
                    if lender is None
                    else f"service {lender_id!r} does not list its own incident_types"
                )
                raise entry.error("incident_types_from", problem)
            services[service_id] = replace(
                services[service_id], incident_types=lender.incident_types
            )
        return services

    def _refused(self, table: _Table, services: Mapping[str, ServicePolicy]) -> dict[str, str]:
        refused: dict[str, str] = {}
        for incident_type in table:
            if not _NAME_RE.fullmatch(incident_type):
                raise table.error(incident_type, "is not a valid incident type id")
            for service in services.values():
                if incident_type in service.incident_types:
                    raise table.error(
                        incident_type,
                        f"is both refused and served by service {service.service_id!r}",
                    )
            refused[incident_type] = table.text(incident_type)
        table.finish()
        return refused


def _toml_type(value: object) -> str:
    match value:
        case bool():
            return "a boolean"
        case int():
            return "an integer"
        case float():
            return "a float"
        case str():
            return "a string"
        case list():
            return "an array"
        case dict():
            return "a table"
        case datetime():
            return "a datetime"
        case _:
            return f"a {type(value).__name__}"
