"""Fair shares of the agents' viewer slots: per-operator and per-agency caps on open sessions.

An agent serves at most 256 viewers (``edge_agent.agent.MAX_SESSIONS``). Without caps one
district operator could hold every slot with standing-access sessions and keep the police out.
So the core refuses a new session when the operator already holds ``per_operator`` open
sessions, or when standing-access sessions of the operator's agency already hold
``standing_per_agency`` slots on that district's agent. Incident and break-glass sessions are
not held to the agency cap: emergencies come first. The refusal is a recorded denial like any
other (``AccessService.open_session``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cloud_core.policy import Basis


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionCaps:
    per_operator: int = 16
    standing_per_agency: int = 64


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
