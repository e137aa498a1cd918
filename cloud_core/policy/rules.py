"""The rules the policy file sets: the safety services, standing access, break-glass limits.

``Policy`` is the validated policy file (build it with :func:`cloud_core.policy.load_policy` or
:meth:`Policy.default`); it also opens incidents, because the service an incident belongs to fixes
its radius, time box, purpose and legal basis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from cloud_core.exceptions import AccessDenied
from cloud_core.geo_area import GeoArea
from cloud_core.policy.model import (
    DISTRICT_AGENCY_PREFIX,
    Incident,
    Role,
    new_id,
    require_coordinates,
    require_utc,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServicePolicy:
    """One safety service as the policy file defines it.

    ``incident_types`` are all the types the service serves; when ``incident_types_from`` names
    another service they are that service's types, and this one opens only when asked by name.

    A moving incident's grant covers the cameras near its latest position and near each of its
    last ``follow_positions`` positions or those of the last ``follow_minutes`` minutes.
    ``hand_off_to`` names the service an incident of this one may be handed off to (opening a
    linked incident of type ``hand_off_type`` there), e.g. a wearable SOS to 112.
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
    follow_positions: int = 1
    follow_minutes: int = 0
    live_cameras: int = 9
    """How many of the nearest cameras a console opens live at once (Changwon: 5 for an SOS)."""
    areas: bool = False
    """Incidents may cover a declared area (a polygon, whole districts) instead of a radius."""
    extendable: bool = False
    """Incidents may be extended past their time box, with a written reason."""
    hand_off_to: str | None = None
    hand_off_type: str | None = None


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
class SessionCaps:
    """``[session_caps]``: fair shares of the agents' viewer slots (``cloud_core.session_capacity``).

    ``per_operator``: open sessions one operator may hold at once, on any basis.
    ``standing_per_agency``: standing-access sessions one agency (a district's own control
    centre) may hold on its district's agent. Incident and break-glass sessions are not held to
    the agency cap, and when an agent is full they preempt a standing-access session.
    """

    per_operator: int = 16
    standing_per_agency: int = 64


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
    session_caps: SessionCaps = field(default_factory=lambda: SessionCaps())

    @classmethod
    def default(cls) -> Policy:
        """The policy shipped with the package (``cloud_core/policy.toml``)."""
        from cloud_core.policy.loader import default_policy  # the loader builds a Policy

        return default_policy()

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
            chosen = self.service_named(service)
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
        clamp: bool = False,
        area: GeoArea | None = None,
    ) -> Incident:
        """Open an incident-scoped access window for ``incident_type`` at (``lat``, ``lon``).

        The radius defaults to the service's; one beyond the service's maximum is refused
        (ValueError naming the maximum) unless ``clamp`` asks for the maximum instead, which is
        logged. The window lasts the service's time box from ``now``; the legal basis defaults to the service's. ``service``
        picks a service that shares its types with another (112 emergency dispatch).

        Raises AccessDenied for refused incident types and ValueError for invalid input.
        """
        now = require_utc("now", now)
        occurred_at = require_utc("occurred_at", occurred_at)
        if occurred_at > now + timedelta(minutes=1):
            raise ValueError(f"occurred_at {occurred_at.isoformat()} is in the future")
        require_coordinates(lat, lon)
        chosen = self.service_for(incident_type, service)
        radius = service_radius(chosen, radius_m, clamp=clamp)
        if area is not None and not chosen.areas:
            raise ValueError(f"{chosen.title} incidents cover a radius, not a declared area")
        if legal_basis is not None and not legal_basis.strip():
            raise ValueError("legal_basis, when given, must not be blank")
        return Incident(
            incident_id=incident_id or new_id("INC", now),
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
            area=area,
        )

    def service_named(self, name: str) -> ServicePolicy:
        """The service ``name`` names: its id, or an abbreviation of it that keeps some of its
        words in order (``112-dispatch`` for ``112-emergency-dispatch``) and fits one service.

        Raises ValueError naming the services for an unknown or ambiguous name.
        """
        exact = self.services.get(name)
        if exact is not None:
            return exact
        words = name.lower().split("-")
        fits = [s for s in self.services.values() if _keeps_in_order(words, s.service_id.split("-"))]
        if len(fits) == 1:
            return fits[0]
        if fits:
            raise ValueError(f"service {name!r} could be any of "
                             f"{', '.join(sorted(s.service_id for s in fits))}; name one")
        raise ValueError(f"unknown service {name!r}; services are: {self._service_list()}")

    def _service_list(self) -> str:
        return ", ".join(sorted(self.services))



def _keeps_in_order(words: list[str], of: list[str]) -> bool:
    """Whether ``words`` are some of ``of``, in the same order (and at least one)."""
    rest = iter(of)
    return bool(words) and all(w and any(w == o for o in rest) for w in words)


def service_radius(service: ServicePolicy, radius_m: float | None, *, clamp: bool = False) -> float:
    """The radius an incident of ``service`` gets for a request of ``radius_m`` (None: default).

    A radius beyond the service's maximum is an error naming the maximum, unless ``clamp``.
    """
    radius = service.default_radius_m if radius_m is None else float(radius_m)
    if not (math.isfinite(radius) and radius > 0):
        raise ValueError(f"radius_m must be a positive number of metres, not {radius_m}")
    if radius > service.max_radius_m:
        if not clamp:
            raise ValueError(
                f"radius_m {radius:g} is beyond the maximum of {service.max_radius_m:g} m for "
                f"{service.title}; ask for at most {service.max_radius_m:g} (or ask to clamp)")
        log.info("incident.radius_clamped", service=service.service_id, asked_m=radius,
                 max_m=service.max_radius_m)
        radius = service.max_radius_m
    return radius
