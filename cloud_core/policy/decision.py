"""Deciding a view: default deny, and exactly one of three bases when allowed.

* ``district-own``: the camera's own district control centre (agency ``district:<id>``), standing
  access without an incident;
* ``incident``: an open incident that admits the operator's agency, with the camera inside the
  incident's radius, within its time box;
* ``break-glass``: a supervisor's short (at most 30 minutes), written-reason emergency window.

Pure code: no I/O, no clock (``now`` is always passed in). Callers audit every
:class:`Decision`; this module does not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from cloud_core.exceptions import AccessDenied
from cloud_core.policy.model import (
    DISTRICT_AGENCY_PREFIX,
    VIEW_ROLES,
    Basis,
    BreakGlass,
    CameraPlace,
    Incident,
    Operator,
    Role,
    distance_m,
    district_agency,
    new_id,
    require_utc,
)
from cloud_core.policy.rules import Policy

log = structlog.get_logger(__name__)


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
    now = require_utc("now", now)
    if not operator.enabled:
        return Decision.deny(f"operator {operator.operator_id} is disabled")
    if operator.role not in VIEW_ROLES:
        return Decision.deny(f"role {operator.role} may not view video")
    if operator.agency == district_agency(camera.district_id):
        return _standing_access(policy, camera, now)

    refusals: list[str] = []
    if incident is not None:
        problem = _incident_problem(policy, operator, camera, incident, now)
        if problem is None:
            return _incident_access(operator, incident)
        refusals.append(problem)
    if breakglass is not None:
        problem = _break_glass_problem(operator, camera, breakglass, now)
        if problem is None:
            return _break_glass_access(policy, operator, breakglass)
        refusals.append(problem)
    if not refusals:
        refusals.append(_no_basis_offered(operator, camera))
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
    clamp: bool = False,
) -> BreakGlass:
    """Open a supervisor's break-glass window over ``camera_ids`` and/or ``district_ids``.

    The window starts at ``now`` and lasts ``minutes``; more than the policy's maximum (never
    more than 30) is refused with the maximum named, unless ``clamp`` asks for the maximum. Raises AccessDenied unless ``operator`` is an enabled supervisor, and
    ValueError without a written reason of the policy's minimum length or without a scope.
    """
    now = require_utc("now", now)
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
    window = BreakGlass(
        breakglass_id=breakglass_id or new_id("BG", now),
        operator_id=operator.operator_id,
        reason=written,
        started_at=now,
        expires_at=now + _break_glass_duration(policy, operator, minutes, clamp),
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


def _break_glass_duration(policy: Policy, operator: Operator, minutes: int,
                          clamp: bool) -> timedelta:
    """``minutes`` as a window length; beyond the maximum an error, or the maximum if ``clamp``."""
    if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes <= 0:
        raise ValueError(f"minutes must be a positive whole number, not {minutes!r}")
    duration = timedelta(minutes=minutes)
    longest = policy.break_glass.max_duration // timedelta(minutes=1)
    if duration > policy.break_glass.max_duration:
        if not clamp:
            raise ValueError(f"a break-glass window lasts at most {longest} minutes, asked "
                             f"{minutes}; ask for at most {longest} (or ask to clamp)")
        log.info("break_glass.duration_clamped", operator=operator.operator_id,
                 asked_minutes=minutes, max_minutes=longest)
        duration = policy.break_glass.max_duration
    return duration


def _standing_access(policy: Policy, camera: CameraPlace, now: datetime) -> Decision:
    return Decision(
        allowed=True,
        reason=f"standing access of district {camera.district_id} to its own cameras",
        expires_at=now + policy.standing.session,
        basis=Basis.DISTRICT_OWN,
        purpose=policy.standing.purpose,
        legal_basis=policy.standing.legal_basis,
    )


def _incident_access(operator: Operator, incident: Incident) -> Decision:
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


def _break_glass_access(policy: Policy, operator: Operator, window: BreakGlass) -> Decision:
    return Decision(
        allowed=True,
        reason=f"break-glass {window.breakglass_id} of supervisor "
        f"{operator.operator_id}",
        expires_at=window.expires_at,
        basis=Basis.BREAK_GLASS,
        purpose=f"{policy.break_glass.purpose_prefix}: {window.reason}",
        legal_basis=policy.break_glass.legal_basis,
        breakglass_id=window.breakglass_id,
    )


def _no_basis_offered(operator: Operator, camera: CameraPlace) -> str:
    """Why an operator outside the camera's district, with no incident or window, is refused."""
    if operator.agency.startswith(DISTRICT_AGENCY_PREFIX):
        return (
            f"agency {operator.agency} has standing access only to its own district's "
            f"cameras; camera {camera.camera_id} belongs to district {camera.district_id} "
            f"and no incident was given"
        )
    return (
        f"agency {operator.agency} has no standing access to district cameras; "
        f"viewing needs an open incident or a break-glass window"
    )


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
    return _reach_problem(policy, incident, camera, now)


def incident_centres(policy: Policy, incident: Incident,
                     now: datetime) -> list[tuple[float, float]]:
    """The points an incident's grant reaches around: its latest position, and for a moving one
    the last ``follow_positions`` positions and those of the last ``follow_minutes`` minutes."""
    service = policy.services.get(incident.service)
    positions = service.follow_positions if service else 1
    since = now - timedelta(minutes=service.follow_minutes if service else 0)
    centres = [(incident.lat, incident.lon)]
    trail = incident.trail
    for index, point in enumerate(trail):
        recent = index >= len(trail) - positions or (service is not None
                                                       and service.follow_minutes > 0
                                                       and point.at >= since)
        if recent and (point.lat, point.lon) not in centres:
            centres.append((point.lat, point.lon))
    return centres


def incident_reaches(policy: Policy, incident: Incident, camera: CameraPlace,
                     now: datetime) -> bool:
    """Whether ``camera`` is within the incident's radius of one of its centres at ``now``."""
    return _reach_problem(policy, incident, camera, now) is None


def _reach_problem(policy: Policy, incident: Incident, camera: CameraPlace,
                   now: datetime) -> str | None:
    if incident.area is not None:
        if incident.area.covers(camera.district_id, camera.lat, camera.lon):
            return None
        return "camera is outside the incident's declared area"
    distance = min(distance_m(lat, lon, camera.lat, camera.lon)
                   for lat, lon in incident_centres(policy, incident, now))
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

