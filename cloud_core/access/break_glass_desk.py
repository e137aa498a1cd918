"""Break-glass: a supervisor's short, written-reason emergency window, recorded as a START/STOP pair.

The sweeper closes the pair of a window that runs out unstopped; stopping one early ends its
sessions at once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from cloud_core.access import denials
from cloud_core.access.caller import Caller
from cloud_core.access.grant_sweeper import GrantSweeper
from cloud_core.access.recorder import AuditRecorder
from cloud_core.audit import AuditAction, AuditEntry
from cloud_core.exceptions import AccessDenied, InvalidRequest
from cloud_core.incidents import IncidentStore
from cloud_core.policy import BreakGlass, Policy, start_break_glass


class BreakGlassDesk:
    """Starts, stops and lists break-glass windows, recording each start and stop."""

    def __init__(self, *, incidents: IncidentStore, policy: Policy, recorder: AuditRecorder,
                 sweeper: GrantSweeper, clock: Callable[[], datetime]) -> None:
        self._incidents = incidents
        self._policy = policy
        self._recorder = recorder
        self._sweeper = sweeper
        self._clock = clock

    async def start(self, caller: Caller, *, camera_ids: list[str], district_ids: list[str],
                    reason: str, minutes: int, clamp: bool = False) -> BreakGlass:
        """Open a window for a supervisor (the policy says who and how long) and record it."""
        operator = caller.operator
        now = self._clock()
        try:
            window = start_break_glass(self._policy, operator, camera_ids, reason, now, minutes,
                                       district_ids=district_ids, clamp=clamp)
        except AccessDenied as exc:
            await self._recorder.refuse(caller, AuditAction.BREAKGLASS_START, exc.reason)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        rules = self._policy.break_glass
        await self._recorder.record(AuditEntry(
            action=AuditAction.BREAKGLASS_START, operator_id=operator.operator_id,
            agency=operator.agency, source_address=caller.source_address or None,
            camera_ids=tuple(sorted(window.camera_ids)), reason=window.reason,
            purpose=f"{rules.purpose_prefix}: {window.reason}",
            legal_basis=rules.legal_basis, period_start=window.started_at,
            period_end=window.expires_at,
            details={"breakglass_id": window.breakglass_id,
                     "district_ids": sorted(window.district_ids)}))
        self._incidents.add_break_glass(window)
        return window

    async def stop(self, caller: Caller, breakglass_id: str) -> BreakGlass:
        """Stop the caller's own window early; its sessions end at once."""
        window = self._incidents.break_glass(breakglass_id)
        if window is None or window.operator_id != caller.operator.operator_id:
            _, not_yours = denials.missing_break_glass(breakglass_id)
            raise InvalidRequest(not_yours)
        if window.stopped_at is not None:
            raise InvalidRequest(f"break-glass {breakglass_id} is already stopped")
        now = self._clock()
        await self._recorder.break_glass_stopped(window, now, caller)
        self._incidents.stop_break_glass(breakglass_id, now)
        await self._sweeper.sweep()
        stopped = self._incidents.break_glass(breakglass_id)
        assert stopped is not None
        return stopped

    def review(self, since: datetime | None = None,
               until: datetime | None = None) -> list[BreakGlass]:
        """Every window that started in [since, until), for the supervisors' review."""
        return self._incidents.break_glass_windows(since, until)
