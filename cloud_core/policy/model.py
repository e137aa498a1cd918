"""The policy's nouns: operators and their roles, camera places, incidents, break-glass windows.

Frozen dataclasses that validate themselves on construction, so a decision never sees an
operator without an id, a camera off the globe or an incident that ends before it opens. Every
datetime is timezone-aware UTC.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final

from cloud_core.geo_area import GeoArea

EARTH_RADIUS_M: Final = 6_371_008.8
"""Mean Earth radius (IUGG), the sphere :func:`distance_m` measures on."""

BREAK_GLASS_LIMIT: Final = timedelta(minutes=30)
"""Hard ceiling of a break-glass window; the policy file may only shorten it."""

DISTRICT_AGENCY_PREFIX: Final = "district:"


class Role(StrEnum):
    """What an operator may do. Only ``operator`` and ``supervisor`` view video."""

    OPERATOR = "operator"
    SUPERVISOR = "supervisor"
    AUDITOR = "auditor"
    ADMIN = "admin"
    FEED = "feed"
    """A system client (a carrier's wearable platform, a CAD feed), not a person: it reports
    and moves its agency's incidents and never views video."""
    FIELD = "field"
    """An officer in the field: sees only the incidents the 112 room assigns them to, the
    stills pushed to them and the cameras handed off to them."""


VIEW_ROLES: Final = frozenset({Role.OPERATOR, Role.SUPERVISOR})

REPORT_ROLES: Final = VIEW_ROLES | {Role.FEED}
"""Who may report and move incidents: the viewing roles, and feed clients."""


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
        require_coordinates(self.lat, self.lon)


@dataclass(frozen=True, slots=True)
class TrailPoint:
    """One position of a moving incident (a fleeing suspect, a wearable's wearer) and its source."""

    lat: float
    lon: float
    at: datetime
    source: str = "report"

    def __post_init__(self) -> None:
        require_coordinates(self.lat, self.lon)
        object.__setattr__(self, "at", require_utc("at", self.at))


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
    trail: tuple[TrailPoint, ...] = ()
    """Positions since the report, oldest first; (``lat``, ``lon``) is the latest."""
    area: GeoArea | None = None
    """A declared area (polygon, whole districts) the grant covers instead of the radius."""

    def __post_init__(self) -> None:
        _require_text("incident_id", self.incident_id)
        object.__setattr__(self, "trail", tuple(self.trail))
        require_coordinates(self.lat, self.lon)
        if not (math.isfinite(self.radius_m) and self.radius_m > 0):
            raise ValueError(f"radius_m must be a positive number of metres, not {self.radius_m}")
        object.__setattr__(self, "agencies", frozenset(self.agencies))
        for name in ("opened_at", "expires_at", "closed_at", "occurred_at"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, require_utc(name, value))
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
        return replace(self, closed_at=require_utc("now", now))


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
                object.__setattr__(self, name, require_utc(name, value))
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
        return replace(self, stopped_at=require_utc("now", now))


def new_id(prefix: str, now: datetime) -> str:
    """A fresh identifier such as ``INC-20250501T030000Z-1a2b3c4d``: sortable, unique."""
    return f"{prefix}-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def require_utc(name: str, value: datetime) -> datetime:
    """``value`` in UTC; TypeError if it is no datetime, ValueError if it is naive."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value.isoformat()}")
    return value.astimezone(UTC)


def require_coordinates(lat: float, lon: float) -> None:
    """ValueError unless (``lat``, ``lon``) is a point on the globe, in degrees."""
    if not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
        raise ValueError(f"latitude {lat} is outside -90..90")
    if not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
        raise ValueError(f"longitude {lon} is outside -180..180")


def _require_text(name: str, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")

