"""One case number reported through two core replicas in the same instant: each replica's lock
is its own, so both may open an incident; the one that loses the claim on the case number
closes its own at once, on the record, and answers with the other's."""

from __future__ import annotations

import asyncio

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_core.access import AccessService, Caller
from cloud_core.audit import AuditAction, AuditEntry, AuditRecord
from cloud_core.grants import GrantSigner
from cloud_core.incidents import IncidentStore
from cloud_core.policy import Policy
from cloud_core.sessions import SessionBroker
from tests.cloud_core.test_access_service import (
    GANGNAM_STATION,
    MemoryAuditLog,
    ScriptedAgents,
    World,
    world,
)

__all__ = ["world"]  # the fixture, shared with the access service's tests


class MeetingAuditLog(MemoryAuditLog):
    """Holds each replica's incident report at the audit write until both are there: both have
    then looked the case number up and found nothing, as two replicas do in the same instant."""

    def __init__(self, meeting: asyncio.Barrier) -> None:
        super().__init__()
        self._meeting = meeting

    async def append(self, entry: AuditEntry) -> AuditRecord:
        if entry.action is AuditAction.INCIDENT_REPORT:
            await self._meeting.wait()
        return await super().append(entry)


async def test_a_case_reported_through_two_replicas_at_once_is_one_incident(world: World) -> None:
    registry = world.access.registry
    meeting = asyncio.Barrier(2)

    def replica(audit: MemoryAuditLog) -> AccessService:  # its own locks, the same database
        return AccessService(
            registry=registry, operators=world.operators, incidents=IncidentStore(registry.db),
            policy=Policy.default(), signer=GrantSigner(Ed25519PrivateKey.generate()),
            audit=audit, sessions=SessionBroker(registry, ScriptedAgents()), clock=world.clock)

    first_audit, second_audit = MeetingAuditLog(meeting), MeetingAuditLog(meeting)
    one, other = replica(first_audit), replica(second_audit)
    caller = world.caller("kim", "police-112")
    same = Caller(caller.operator, "10.0.0.8")

    def report(service: AccessService, who: Caller):
        return service.report_incident(who, incident_type="robbery", lat=GANGNAM_STATION[0],
                                       lon=GANGNAM_STATION[1], external_ref="112-2026-0001")

    first, second = await asyncio.gather(report(one, caller), report(other, same))
    assert first.incident.incident.incident_id == second.incident.incident.incident_id
    assert [first.existing, second.existing].count(True) == 1
    opened = [stored for stored in IncidentStore(registry.db).list_all(include_closed=True)
              if stored.incident.external_ref == "112-2026-0001"]
    live = [s for s in opened if s.incident.closed_at is None]
    assert [s.incident.incident_id for s in live] == [first.incident.incident.incident_id]
    entries = [*first_audit.entries, *second_audit.entries]
    closes = [e for e in entries if e.action.value == "incident.close"]
    assert len(opened) == 2, "both replicas passed their own lock: the race happened"
    assert len(closes) == 1 and "duplicate of" in (closes[0].reason or "")
