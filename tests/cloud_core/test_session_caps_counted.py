"""The caps of a new session count the operator's own open sessions and the agency's standing
ones in the camera's district, read from the registry (both backends), not the whole city's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cloud_core.policy import Basis, SessionCaps
from cloud_core.registry import Registry
from cloud_core.session_capacity import capacity_refusal
from cloud_core.storage.base import Location

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_only_the_sessions_a_cap_counts_are_read(core_database: Location) -> None:
    registry = Registry(core_database)
    try:
        def session(n: int, operator: str, agency: str, district: str, basis: str) -> None:
            registry.record_session(f"ses-{n}", f"{district}-001", district, NOW,
                                    NOW + timedelta(hours=1), operator_id=operator,
                                    agency=agency, basis=basis)

        standing, incident = Basis.DISTRICT_OWN.value, "incident"
        session(1, "gangnam-op", "district:gangnam", "gangnam", standing)   # mine
        session(2, "gangnam-op", "district:gangnam", "mapo", incident)      # mine, elsewhere
        session(3, "other-op", "district:gangnam", "gangnam", standing)     # agency, standing
        session(4, "other-op", "district:gangnam", "gangnam", incident)     # not standing
        session(5, "other-op", "district:gangnam", "mapo", standing)        # other district
        session(6, "police-op", "police-112", "gangnam", standing)          # other agency
        session(7, "gangnam-op", "district:gangnam", "gangnam", standing)
        registry.end_session("ses-7", NOW, "closed")                        # closed
        counted = registry.open_sessions_counted_for("gangnam-op", "district:gangnam", "gangnam")
        assert sorted(str(r["session_id"]) for r in counted) == ["ses-1", "ses-2", "ses-3"]

        def refusal(per_operator: int, standing_per_agency: int) -> str | None:
            return capacity_refusal(counted, operator_id="gangnam-op", agency="district:gangnam",
                                    district_id="gangnam", standing=True,
                                    caps=SessionCaps(per_operator=per_operator,
                                                    standing_per_agency=standing_per_agency))

        assert refusal(3, 3) is None
        assert "already holds 2 open sessions" in (refusal(2, 3) or "")
        assert "already holds 2 standing-access sessions" in (refusal(3, 2) or "")
    finally:
        registry.close()
