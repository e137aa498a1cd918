"""Denial wording: every sentence the access layer refuses a caller with, in one place.

A refused view is told why without revealing whether a camera exists: an unknown camera and a
camera outside every grant the caller holds get the same answer. The audit log keeps the policy's
own, more specific reason (:func:`cloud_core.policy.decide_view`); what is here is what the
caller reads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from cloud_core.policy import VIEW_ROLES, BreakGlass, Decision, Incident, Operator, Role

UNKNOWN_CAMERA: Final = "unknown camera"
"""The audit log's reason for a view of a camera the registry does not know."""

AUDIT_UNAVAILABLE: Final = "the audit log cannot be written; access is refused until it can"
"""Fail closed: no access is given that cannot be recorded."""

NOT_HANDED_OFF: Final = "the 112 room has not handed this camera off to you for this incident"
"""A field officer asking for a camera the room did not hand them (or after unassignment)."""

REVOKE_NEEDS_SUPERVISOR: Final = "only a supervisor of the session's agency may revoke it"


def missing_incident(incident_id: str) -> tuple[str, str]:
    """(audit reason, caller's reason) for a view under an incident that does not exist."""
    return (f"incident {incident_id} does not exist",
            f"incident {incident_id} does not exist or is not yours")


def missing_break_glass(breakglass_id: str) -> tuple[str, str]:
    """(audit reason, caller's reason) for a break-glass window that does not exist."""
    return (f"break-glass {breakglass_id} does not exist",
            f"break-glass {breakglass_id} does not exist or is not yours")


def view_refused(operator: Operator, incident: Incident | None, window: BreakGlass | None,
                 decision: Decision, now: datetime) -> str:
    """Why a view was refused, in words that do not tell an unknown camera from one outside the
    caller's grants. A disabled operator or a role without video hears the policy's reason."""
    if not operator.enabled or operator.role not in VIEW_ROLES:
        return decision.reason
    parts = []
    if incident is not None:
        parts.append(_incident_refusal(operator, incident, now))
    if window is not None:
        parts.append(_break_glass_refusal(operator, window, now))
    if not parts:
        parts.append("no incident, break-glass window or standing access of yours covers "
                     "this camera")
    return "; ".join(parts)


def may_not_report(role: Role) -> str:
    """A role without video may not report incidents either."""
    return f"role {role} may not report incidents"


def agency_may_not_report(agency: str, incident_type: str, incident: Incident) -> str:
    """The service an incident type opens does not admit the reporter's agency."""
    return (f"agency {agency} may not report {incident_type} incidents "
            f"(service {incident.service} admits {', '.join(sorted(incident.agencies))})")


def may_not_close(operator_id: str, incident_id: str) -> str:
    """Only a viewing role of an admitted agency closes an incident."""
    return f"{operator_id} may not close incident {incident_id}"


def may_not_change(operator_id: str, incident_id: str) -> str:
    """Only a viewing role of an admitted agency moves, links or hands off an incident."""
    return f"{operator_id} may not move, link or hand off incident {incident_id}"


def auditors_only(role: Role) -> str:
    """Only auditors read the audit log."""
    return f"role {role} may not read the audit log; auditors only"


def _incident_refusal(operator: Operator, incident: Incident, now: datetime) -> str:
    if incident.closed_at is not None and incident.closed_at <= now:
        return f"incident {incident.incident_id} is closed"
    if now >= incident.expires_at:
        return (f"incident {incident.incident_id}'s time box ended at "
                f"{incident.expires_at:%H:%M:%S} UTC")
    if operator.agency not in incident.agencies:
        return f"agency {operator.agency} is not admitted to incident {incident.incident_id}"
    return (f"the camera is not within incident {incident.incident_id}'s "
            f"{incident.radius_m:.0f} m radius")


def _break_glass_refusal(operator: Operator, window: BreakGlass, now: datetime) -> str:
    if window.operator_id != operator.operator_id:
        return f"break-glass {window.breakglass_id} is not yours"
    if window.stopped_at is not None or now >= window.expires_at:
        return f"break-glass {window.breakglass_id} has ended"
    return f"the camera is outside break-glass {window.breakglass_id}'s scope"
