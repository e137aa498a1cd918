"""Writing the access layer's audit records, fail closed.

A decision is written to the audit log before anything is relayed; if the log cannot be written
the action is refused with ``AccessDenied``, so no access is ever given that is not on record.
"""

from __future__ import annotations

from datetime import datetime
from typing import NoReturn

import structlog

from cloud_core.access import denials
from cloud_core.access.caller import Caller
from cloud_core.audit import AuditAction, AuditEntry, AuditLog, AuditOutcome, AuditRecord
from cloud_core.exceptions import AccessDenied, AuditError
from cloud_core.policy import BreakGlass

log = structlog.get_logger(__name__)


class AuditRecorder:
    """The access layer's one way into the audit log."""

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    async def record(self, entry: AuditEntry) -> AuditRecord:
        """Append ``entry``; AccessDenied (fail closed) when the log cannot be written."""
        try:
            return await self._audit.append(entry)
        except AuditError as exc:
            log.error("audit log unavailable, refusing", error=str(exc), action=entry.action.value)
            raise AccessDenied(denials.AUDIT_UNAVAILABLE) from exc

    async def refuse(self, caller: Caller, action: AuditAction, reason: str, *,
                     incident_id: str | None = None) -> NoReturn:
        """Record a refused action and raise AccessDenied with ``reason``."""
        await self.record(AuditEntry(
            action=action, operator_id=caller.operator.operator_id, agency=caller.operator.agency,
            source_address=caller.source_address or None, incident_id=incident_id,
            outcome=AuditOutcome.DENIED, reason=reason))
        raise AccessDenied(reason)

    async def break_glass_stopped(self, window: BreakGlass, at: datetime,
                                  caller: Caller | None) -> None:
        """Close a window's START/STOP pair: stopped by ``caller``, or expired (None)."""
        await self.record(AuditEntry(
            action=AuditAction.BREAKGLASS_STOP,
            operator_id=caller.operator.operator_id if caller else "system:core",
            agency=caller.operator.agency if caller else None,
            camera_ids=tuple(sorted(window.camera_ids)), reason=window.reason,
            period_start=window.started_at, period_end=min(at, window.expires_at),
            details={"breakglass_id": window.breakglass_id,
                     "ended": "stopped" if caller else "expired"}))

    async def export_made(self, caller: Caller, since: datetime | None, until: datetime | None,
                          fmt: str, records: int) -> None:
        """Record an audit export: who took which period, in which format, how many records."""
        await self.record(AuditEntry(
            action=AuditAction.AUDIT_EXPORT, operator_id=caller.operator.operator_id,
            agency=caller.operator.agency, source_address=caller.source_address or None,
            period_start=since, period_end=until,
            details={"format": fmt, "records": records}))
