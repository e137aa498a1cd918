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
every :class:`Decision`; this package does not.

The package, one job a module:

* ``model`` — the nouns: ``Operator``, ``Role``, ``CameraPlace``, ``Incident``, ``BreakGlass``;
* ``rules`` — what the file sets: ``Policy``, ``ServicePolicy``, standing access, break-glass rules,
  session caps;
* ``decision`` — ``decide_view``, ``start_break_glass`` and their ``Decision``;
* ``loader`` — ``load_policy``/``parse_policy``: TOML in, a validated ``Policy`` out.
"""

from cloud_core.policy.decision import (
    Decision,
    decide_view,
    incident_centres,
    incident_reaches,
    start_break_glass,
)
from cloud_core.policy.loader import SCHEMA_VERSION, load_policy, parse_policy
from cloud_core.policy.model import (
    BREAK_GLASS_LIMIT,
    DISTRICT_AGENCY_PREFIX,
    EARTH_RADIUS_M,
    REPORT_ROLES,
    VIEW_ROLES,
    Basis,
    BreakGlass,
    CameraPlace,
    Incident,
    Operator,
    Role,
    TrailPoint,
    distance_m,
    district_agency,
)
from cloud_core.policy.rules import (
    BreakGlassRules,
    EvidenceRules,
    Policy,
    ServicePolicy,
    SessionCaps,
    StandingAccess,
    service_radius,
)

__all__ = [
    "BREAK_GLASS_LIMIT",
    "DISTRICT_AGENCY_PREFIX",
    "EARTH_RADIUS_M",
    "REPORT_ROLES",
    "SCHEMA_VERSION",
    "VIEW_ROLES",
    "Basis",
    "BreakGlass",
    "BreakGlassRules",
    "CameraPlace",
    "Decision",
    "EvidenceRules",
    "Incident",
    "Operator",
    "Policy",
    "Role",
    "ServicePolicy",
    "SessionCaps",
    "StandingAccess",
    "TrailPoint",
    "decide_view",
    "distance_m",
    "district_agency",
    "incident_centres",
    "incident_reaches",
    "load_policy",
    "parse_policy",
    "service_radius",
    "start_break_glass",
]
