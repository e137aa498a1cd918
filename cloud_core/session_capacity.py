"""Fair shares of the agents' viewer slots, and emergency priority when an agent is full.

An agent serves at most ``max_sessions`` viewers (its config, 256 by default). Without caps one
district operator could hold every slot with standing-access sessions and keep the police out
(issue 12, finding 2). So the core refuses a new session when the operator already holds
``per_operator`` open sessions, or when standing-access sessions of the operator's agency
already hold ``standing_per_agency`` slots on that district's agent; both caps come from the
policy file's ``[session_caps]`` (``cloud_core.policy.SessionCaps``). Incident and break-glass
sessions are not held to the agency cap: emergencies come first. The refusal is a recorded
denial like any other (``AccessService.open_session``).

When the agent itself is full (it refuses the offer with ``SIGNAL_ERROR_CAPACITY``), an
incident or break-glass session preempts a standing-access one: :func:`preemption_victim`
picks the youngest standing-access session on that district's agent, the session desk ends it
with :func:`preemption_reason` (the reason its viewer sees) and offers again.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from cloud_core.policy import Basis, SessionCaps

PREEMPTING_BASES = frozenset({Basis.INCIDENT, Basis.BREAK_GLASS})
"""Sessions on these bases take a full agent's slot from a standing-access session."""


def capacity_refusal(open_sessions: Iterable[Mapping[str, object]], *, operator_id: str,
                     agency: str, district_id: str, standing: bool,
                     caps: SessionCaps) -> str | None:
    """Why a new session may not open (the caller's words), or None if there is room."""
    mine = agency_standing = 0
    for row in open_sessions:
        if row["operator_id"] == operator_id:
            mine += 1
        if (row["agency"] == agency and row["district_id"] == district_id
                and row["basis"] == Basis.DISTRICT_OWN.value):
            agency_standing += 1
    if mine >= caps.per_operator:
        return (f"operator {operator_id} already holds {mine} open sessions; at most "
                f"{caps.per_operator} (close one first)")
    if standing and agency_standing >= caps.standing_per_agency:
        return (f"agency {agency} already holds {agency_standing} standing-access sessions in "
                f"district {district_id}; at most {caps.standing_per_agency}, so that incident "
                "sessions always find room")
    return None


def preemption_victim(open_sessions: Iterable[Mapping[str, object]], *, district_id: str,
                      skip: Collection[str] = ()) -> dict[str, object] | None:
    """The standing-access session a full agent of ``district_id`` gives up for an emergency:
    the youngest (the least watched so far; a control centre's long-standing wall stays), or
    None when the agent's slots hold no standing-access session (then the emergency waits)."""
    standing = [dict(row) for row in open_sessions
                if row["district_id"] == district_id and row["basis"] == Basis.DISTRICT_OWN.value
                and row["session_id"] not in skip]
    if not standing:
        return None
    return max(standing, key=lambda row: (str(row["opened_at"]), str(row["session_id"])))


def preemption_reason(*, incident_id: str, breakglass_id: str, session_id: str) -> str:
    """What the preempted session's viewer is told (tile, CLI viewer, audit record)."""
    cause = f"incident {incident_id}" if incident_id else f"break-glass {breakglass_id}"
    return (f"preempted by {cause}: the district agent was full and emergency session "
            f"{session_id} needed a viewer slot")
