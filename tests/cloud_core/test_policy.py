"""The access policy: the policy file loader, incidents, break-glass and every view decision."""

from __future__ import annotations

import math
import tomllib
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cloud_core
from cloud_core.exceptions import AccessDenied, PolicyError
from cloud_core.policy import (
    Basis,
    BreakGlass,
    CameraPlace,
    Decision,
    Incident,
    Operator,
    Policy,
    Role,
    SessionCaps,
    decide_view,
    distance_m,
    load_policy,
    start_break_glass,
)

SHIPPED_POLICY = Path(cloud_core.__file__).with_name("policy.toml")
NOW = datetime(2025, 5, 1, 3, 0, tzinfo=UTC)
CITY_HALL = (37.5663, 126.9779)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.default()


def police(role: str = "operator", enabled: bool = True) -> Operator:
    return Operator("op-police-1", "Officer Kim", "police-112", Role(role), enabled)


def camera_at(
    lat: float, lon: float, district: str = "jung", camera_id: str = "cam-1"
) -> CameraPlace:
    return CameraPlace(camera_id, district, lat, lon)


def metres_north(lat: float, lon: float, metres: float) -> tuple[float, float]:
    return lat + metres / 111_195.0, lon


def robbery(policy: Policy, radius_m: float | None = None) -> Incident:
    return policy.open_incident(
        "robbery",
        *CITY_HALL,
        radius_m,
        NOW - timedelta(minutes=2),
        NOW,
        "112-2025-0001",
        incident_id="INC-1",
    )


# Distance ----------------------------------------------------------------------------------------


def test_distance_is_zero_for_the_same_point() -> None:
    assert distance_m(*CITY_HALL, *CITY_HALL) == 0.0


def test_distance_seoul_city_hall_to_gangnam_station() -> None:
    # Seoul City Hall to Gangnam Station is about 8.9 km as the crow flies.
    assert distance_m(37.5663, 126.9779, 37.4979, 127.0276) == pytest.approx(8_830, rel=0.02)


def test_distance_one_degree_of_latitude() -> None:
    assert distance_m(37.0, 127.0, 38.0, 127.0) == pytest.approx(111_195, rel=1e-4)


# The policy file ---------------------------------------------------------------------------------


def test_shipped_policy_loads_with_all_five_services(policy: Policy) -> None:
    assert set(policy.services) == {
        "112-emergency-video",
        "112-emergency-dispatch",
        "119-emergency-dispatch",
        "disaster-response",
        "vulnerable-person-support",
    }
    assert load_policy(SHIPPED_POLICY).services == policy.services
    assert policy.services["119-emergency-dispatch"].facilities is True
    assert policy.services["112-emergency-dispatch"].incident_types == (
        policy.services["112-emergency-video"].incident_types
    )
    assert policy.services["disaster-response"].agencies == {"disaster-room", "fire-119"}
    assert policy.services["vulnerable-person-support"].agencies == {
        "vulnerable-support",
        "police-112",
    }
    assert policy.break_glass.max_duration == timedelta(minutes=30)
    assert policy.standing.session == timedelta(hours=1)


def test_default_policy_is_package_data() -> None:
    assert Policy.default().source.endswith("policy.toml")
    assert Policy.default() is Policy.default()


BAD_FILES = [
    pytest.param(
        'agencies = ["fire-119"]',
        'agencies = ["fire-911"]',
        "services.119-emergency-dispatch.agencies[0]: unknown agency 'fire-911'",
        id="unknown-agency",
    ),
    pytest.param(
        "default_radius_m = 500\nmax_radius_m = 2000",
        "default_radius_m = -500\nmax_radius_m = 2000",
        "services.112-emergency-video.default_radius_m: must be a positive number, got -500",
        id="negative-radius",
    ),
    pytest.param(
        "default_radius_m = 500\nmax_radius_m = 2000",
        "default_radius_m = 500\nmax_radius_m = 200",
        "services.112-emergency-video.max_radius_m: must be at least default_radius_m (500)",
        id="max-below-default",
    ),
    pytest.param(
        '    "missing-person",\n]',
        '    "missing-person",\n    "fire",\n]',
        "services.119-emergency-dispatch.incident_types[0]: incident type 'fire' is already "
        "served by service '112-emergency-video'",
        id="duplicate-incident-type",
    ),
    pytest.param(
        '    "robbery",\n',
        '    "robbery",\n    "robbery",\n',
        "services.112-emergency-video.incident_types[3]: 'robbery' is listed twice",
        id="type-listed-twice",
    ),
    pytest.param(
        "time_box_minutes = 240\n",
        "",
        "services.vulnerable-person-support.time_box_minutes: is missing",
        id="missing-field",
    ),
    pytest.param(
        "[standing_access]\nsession_minutes = 60\n",
        "[standing_access]\n",
        "standing_access.session_minutes: is missing",
        id="missing-standing-session",
    ),
    pytest.param(
        "facilities = true",
        'facilities = "yes"',
        "services.119-emergency-dispatch.facilities: must be true or false, not a string",
        id="wrong-type-bool",
    ),
    pytest.param(
        "time_box_minutes = 120",
        "time_box_minutes = 120.5",
        "services.112-emergency-video.time_box_minutes: must be an integer, not a float",
        id="wrong-type-int",
    ),
    pytest.param(
        'agencies = ["police-112"]\nincident_types = [',
        'agencies = "police-112"\nincident_types = [',
        "services.112-emergency-video.agencies: must be a list of strings, not a string",
        id="wrong-type-list",
    ),
    pytest.param(
        "max_radius_m = 3000\ntime_box_minutes = 180\nfacilities = true",
        "max_radius_m = 3000\nmax_radius = 9000\ntime_box_minutes = 180\nfacilities = true",
        "services.119-emergency-dispatch.max_radius: is not a known key",
        id="unknown-key-in-service",
    ),
    pytest.param(
        "schema = 1\n",
        "schema = 1\ndefault_allow = true\n",
        "default_allow: is not a known key",
        id="unknown-top-level-key",
    ),
    pytest.param(
        "schema = 1\n",
        "schema = 2\n",
        "schema: must be at most 1, got 2",
        id="unsupported-schema",
    ),
    pytest.param(
        "max_minutes = 30",
        "max_minutes = 45",
        "break_glass.max_minutes: must be at most 30, got 45",
        id="break-glass-over-30-minutes",
    ),
    pytest.param(
        'incident_types_from = "112-emergency-video"',
        'incident_types_from = "112-video"',
        "services.112-emergency-dispatch.incident_types_from: unknown service '112-video'",
        id="borrow-from-unknown-service",
    ),
    pytest.param(
        "[refused_incident_types]\n",
        '[refused_incident_types]\nassault = "not really"\n',
        "refused_incident_types.assault: is both refused and served by service "
        "'112-emergency-video'",
        id="refused-and-served",
    ),
    pytest.param(
        "\n[agencies]\n",
        '\n[agencies]\n"district:gangnam" = "Gangnam control centre"\n',
        'agencies."district:gangnam": district control centres are implicit agencies',
        id="district-listed-as-agency",
    ),
    pytest.param(
        "schema = 1\n",
        "schema = 1\nthis is not toml\n",
        "is not valid TOML",
        id="invalid-toml",
    ),
]


@pytest.mark.parametrize(("old", "new", "problem"), BAD_FILES)
def test_bad_policy_file_names_file_key_and_problem(
    tmp_path: Path, old: str, new: str, problem: str
) -> None:
    text = SHIPPED_POLICY.read_text(encoding="utf-8")
    assert old in text, "the test's anchor must be in the shipped file"
    bad = tmp_path / "policy.toml"
    bad.write_text(text.replace(old, new, 1), encoding="utf-8")

    with pytest.raises(PolicyError) as caught:
        load_policy(bad)

    assert caught.value.path == str(bad)
    assert problem in caught.value.problem
    assert str(bad) in str(caught.value)


@pytest.mark.parametrize(("new", "problem"), [
    ("per_operator = 0", "session_caps.per_operator: must be at least 1, got 0"),
    ("per_operator = 10001", "session_caps.per_operator: must be at most 10000, got 10001"),
    ('per_operator = "16"', "session_caps.per_operator: must be an integer, not a string"),
    ("per_operater = 16", "session_caps.per_operater: is not a known key"),
])
def test_bad_session_caps_name_the_field(tmp_path: Path, new: str, problem: str) -> None:
    text = SHIPPED_POLICY.read_text(encoding="utf-8")
    bad = tmp_path / "policy.toml"
    bad.write_text(text.replace("per_operator = 16", new, 1), encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(bad)
    assert problem in caught.value.problem


def test_session_caps_come_from_the_policy_file_with_defaults(tmp_path: Path) -> None:
    text = SHIPPED_POLICY.read_text(encoding="utf-8")
    assert load_policy(SHIPPED_POLICY).session_caps == SessionCaps(per_operator=16,
                                                                   standing_per_agency=64)
    tight = tmp_path / "tight.toml"
    tight.write_text(text.replace("per_operator = 16", "per_operator = 2", 1), encoding="utf-8")
    assert load_policy(tight).session_caps == SessionCaps(per_operator=2, standing_per_agency=64)
    bare = tmp_path / "bare.toml"
    bare.write_text(text.replace("[session_caps]\nper_operator = 16\nstanding_per_agency = 64\n",
                                 "", 1), encoding="utf-8")
    assert "\n[session_caps]\n" not in bare.read_text(encoding="utf-8")
    assert load_policy(bare).session_caps == SessionCaps()


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot be read"):
        load_policy(tmp_path / "nowhere.toml")


def test_policy_file_that_is_not_utf8(tmp_path: Path) -> None:
    bad = tmp_path / "policy.toml"
    bad.write_bytes(b"schema = 1\n\xff\xfe")
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(bad)


# Incidents ---------------------------------------------------------------------------------------


def test_incident_defaults_from_its_service(policy: Policy) -> None:
    incident = robbery(policy)
    assert incident.service == "112-emergency-video"
    assert incident.radius_m == 500
    assert incident.agencies == {"police-112"}
    assert incident.opened_at == NOW
    assert incident.expires_at == NOW + timedelta(minutes=120)
    assert incident.legal_basis.startswith("PIPA Art. 18(2)")
    assert incident.purpose.startswith("112 emergency video")
    assert incident.external_ref == "112-2025-0001"
    assert incident.closed_at is None


def test_incident_radius_beyond_the_maximum_is_refused_unless_clamped(policy: Policy) -> None:
    assert robbery(policy, radius_m=200).radius_m == 200
    assert robbery(policy, radius_m=1500).radius_m == 1500
    with pytest.raises(ValueError, match="beyond the maximum of 2000 m for 112 emergency video"):
        robbery(policy, radius_m=5_000)
    clamped = policy.open_incident("robbery", *CITY_HALL, 5_000, NOW, NOW, "112-1", clamp=True)
    assert clamped.radius_m == 2000
    with pytest.raises(ValueError, match="radius_m must be a positive"):
        robbery(policy, radius_m=-1)


def test_incident_legal_basis_can_be_given(policy: Policy) -> None:
    incident = policy.open_incident(
        "fire", *CITY_HALL, None, NOW, NOW, "119-1", "Fire Services Act Art. 16"
    )
    assert incident.legal_basis == "Fire Services Act Art. 16"
    assert incident.agencies == {"fire-119"}
    assert policy.services[incident.service].facilities


def test_disaster_has_a_large_radius_and_long_time_box(policy: Policy) -> None:
    incident = policy.open_incident("flood", *CITY_HALL, None, NOW, NOW, "declaration-7")
    assert incident.service == "disaster-response"
    assert incident.radius_m == 3000
    assert incident.expires_at - incident.opened_at == timedelta(days=3)


def test_112_dispatch_is_opened_by_name_with_the_same_types(policy: Policy) -> None:
    incident = policy.open_incident(
        "kidnapping", *CITY_HALL, None, NOW, NOW, "112-9", service="112-emergency-dispatch"
    )
    assert incident.service == "112-emergency-dispatch"
    assert incident.agencies == {"police-112"}
    with pytest.raises(ValueError, match="not served by 119 emergency dispatch"):
        policy.open_incident(
            "kidnapping", *CITY_HALL, None, NOW, NOW, "112-9", service="119-emergency-dispatch"
        )


@pytest.mark.parametrize(("name", "service"), [
    ("112-dispatch", "112-emergency-dispatch"), ("112-video", "112-emergency-video"),
    ("119-dispatch", "119-emergency-dispatch"), ("disaster", "disaster-response"),
    ("vulnerable-support", "vulnerable-person-support"),
    ("112-emergency-dispatch", "112-emergency-dispatch")])
def test_a_service_may_be_named_short_when_one_service_fits(
    policy: Policy, name: str, service: str
) -> None:
    assert policy.service_named(name).service_id == service


@pytest.mark.parametrize(("name", "problem"), [
    ("112", "could be any of 112-emergency-dispatch, 112-emergency-video"),
    ("dispatch", "could be any of 112-emergency-dispatch, 119-emergency-dispatch"),
    ("dispatch-112", "unknown service 'dispatch-112'"),   # the words keep their order
    ("112--dispatch", "unknown service"), ("", "unknown service"), ("emergency-x", "unknown")])
def test_a_short_service_name_that_fits_none_or_several_is_refused_naming_them(
    policy: Policy, name: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        policy.open_incident("robbery", *CITY_HALL, None, NOW, NOW, "112-9", service=name)


@pytest.mark.parametrize("incident_type", ["noise-complaint", "parking-violation"])
def test_non_violent_incident_types_are_refused_with_a_reason(
    policy: Policy, incident_type: str
) -> None:
    with pytest.raises(AccessDenied) as caught:
        policy.open_incident(incident_type, *CITY_HALL, None, NOW, NOW, "ref")
    assert (
        f"incident type {incident_type!r} does not justify access to video" in caught.value.reason
    )


def test_unknown_incident_type(policy: Policy) -> None:
    with pytest.raises(ValueError, match="unknown incident type 'alien-landing'"):
        policy.open_incident("alien-landing", *CITY_HALL, None, NOW, NOW, "ref")


def test_incident_times_must_be_aware_and_not_in_the_future(policy: Policy) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        policy.open_incident("fire", *CITY_HALL, None, NOW, NOW.replace(tzinfo=None), "ref")
    with pytest.raises(ValueError, match="in the future"):
        policy.open_incident("fire", *CITY_HALL, None, NOW + timedelta(hours=1), NOW, "ref")
    with pytest.raises(ValueError, match="latitude"):
        policy.open_incident("fire", 91.0, 127.0, None, NOW, NOW, "ref")


# Decisions ---------------------------------------------------------------------------------------


def test_district_own_camera_without_incident_is_allowed(policy: Policy) -> None:
    clerk = Operator("op-jung-1", "Park", "district:jung", Role.OPERATOR)
    decision = decide_view(policy, clerk, camera_at(*CITY_HALL), None, NOW)
    assert decision.allowed
    assert decision.basis is Basis.DISTRICT_OWN
    assert decision.basis.value == "district-own"
    assert decision.expires_at == NOW + timedelta(hours=1)
    assert decision.legal_basis.startswith("PIPA Art. 25(1)")


def test_other_districts_camera_without_incident_is_denied(policy: Policy) -> None:
    clerk = Operator("op-mapo-1", "Choi", "district:mapo", Role.SUPERVISOR)
    decision = decide_view(policy, clerk, camera_at(*CITY_HALL, district="jung"), None, NOW)
    assert decision == Decision.deny(decision.reason)
    assert "standing access only to its own district's cameras" in decision.reason
    assert "belongs to district jung" in decision.reason


def test_agency_without_incident_is_denied(policy: Policy) -> None:
    decision = decide_view(policy, police(), camera_at(*CITY_HALL), None, NOW)
    assert not decision.allowed
    assert "police-112 has no standing access" in decision.reason


def test_incident_admits_its_agency_inside_the_radius(policy: Policy) -> None:
    incident = robbery(policy)
    camera = camera_at(*metres_north(*CITY_HALL, 300))
    decision = decide_view(policy, police(), camera, incident, NOW + timedelta(minutes=5))
    assert decision.allowed
    assert decision.basis == Basis.INCIDENT
    assert decision.expires_at == incident.expires_at
    assert decision.incident_id == "INC-1"
    assert decision.purpose == incident.purpose
    assert decision.legal_basis == incident.legal_basis


def test_auditor_is_denied(policy: Policy) -> None:
    decision = decide_view(policy, police("auditor"), camera_at(*CITY_HALL), robbery(policy), NOW)
    assert not decision.allowed
    assert decision.reason == "role auditor may not view video"


def test_admin_is_denied(policy: Policy) -> None:
    decision = decide_view(policy, police("admin"), camera_at(*CITY_HALL), robbery(policy), NOW)
    assert decision.reason == "role admin may not view video"


def test_disabled_operator_is_denied_even_for_own_district(policy: Policy) -> None:
    clerk = Operator("op-jung-2", "Han", "district:jung", Role.SUPERVISOR, enabled=False)
    decision = decide_view(policy, clerk, camera_at(*CITY_HALL), None, NOW)
    assert not decision.allowed
    assert decision.reason == "operator op-jung-2 is disabled"


def test_closed_incident_is_denied(policy: Policy) -> None:
    incident = robbery(policy).close(NOW + timedelta(minutes=10))
    camera = camera_at(*CITY_HALL)
    assert decide_view(policy, police(), camera, incident, NOW + timedelta(minutes=5)).allowed
    decision = decide_view(policy, police(), camera, incident, NOW + timedelta(minutes=10))
    assert not decision.allowed
    assert decision.reason == "incident INC-1 is closed"


def test_expired_incident_is_denied(policy: Policy) -> None:
    decision = decide_view(
        policy, police(), camera_at(*CITY_HALL), robbery(policy), NOW + timedelta(minutes=120)
    )
    assert decision.reason == "incident INC-1 expired at 2025-05-01T05:00:00+00:00"


def test_radius_edge(policy: Policy) -> None:
    incident = robbery(policy)
    inside = camera_at(*metres_north(*CITY_HALL, 499.9))
    outside = camera_at(*metres_north(*CITY_HALL, 500.2))
    assert decide_view(policy, police(), inside, incident, NOW).allowed
    decision = decide_view(policy, police(), outside, incident, NOW)
    assert decision.reason == "camera is 500.2 m from the incident, outside its 500 m radius"


def test_incident_not_open_yet_is_denied(policy: Policy) -> None:
    decision = decide_view(
        policy, police(), camera_at(*CITY_HALL), robbery(policy), NOW - timedelta(seconds=1)
    )
    assert decision.reason == "incident INC-1 is not open yet (opens at 2025-05-01T03:00:00+00:00)"


def test_outside_radius_is_denied_with_the_distance(policy: Policy) -> None:
    camera = camera_at(*metres_north(*CITY_HALL, 812))
    decision = decide_view(policy, police(), camera, robbery(policy), NOW)
    assert not decision.allowed
    assert decision.reason == "camera is 812 m from the incident, outside its 500 m radius"


def test_agency_not_admitted_to_the_service(policy: Policy) -> None:
    firefighter = Operator("op-fire-1", "Jung", "fire-119", Role.OPERATOR)
    decision = decide_view(policy, firefighter, camera_at(*CITY_HALL), robbery(policy), NOW)
    assert decision.reason == "agency fire-119 is not admitted to 112 emergency video incidents"


def test_vulnerable_person_incident_hands_off_to_112(policy: Policy) -> None:
    incident = policy.open_incident("wearable-sos", *CITY_HALL, None, NOW, NOW, "band-42")
    camera = camera_at(*metres_north(*CITY_HALL, 900))
    protector = Operator("op-care-1", "Yoon", "vulnerable-support", Role.OPERATOR)
    assert decide_view(policy, protector, camera, incident, NOW).allowed
    assert decide_view(policy, police(), camera, incident, NOW).allowed


# Break-glass -------------------------------------------------------------------------------------


def test_break_glass_for_a_supervisor_lasts_at_most_30_minutes(policy: Policy) -> None:
    supervisor = police("supervisor")
    reason = "child seen taken into a van near the camera"
    with pytest.raises(ValueError, match="lasts at most 30 minutes, asked 90"):
        start_break_glass(policy, supervisor, ["cam-1"], reason, NOW, 90)
    window = start_break_glass(policy, supervisor, ["cam-1"], reason, NOW, 90, clamp=True)
    assert window.expires_at == NOW + timedelta(minutes=30)
    camera = camera_at(*CITY_HALL)

    decision = decide_view(policy, supervisor, camera, None, NOW + timedelta(minutes=29), window)
    assert decision.allowed
    assert decision.basis == Basis.BREAK_GLASS
    assert decision.expires_at == NOW + timedelta(minutes=30)
    assert decision.purpose == "break-glass: child seen taken into a van near the camera"
    assert decision.breakglass_id == window.breakglass_id

    later = decide_view(policy, supervisor, camera, None, NOW + timedelta(minutes=30), window)
    assert not later.allowed
    assert "expired" in later.reason


def test_break_glass_is_refused_for_a_plain_operator(policy: Policy) -> None:
    with pytest.raises(AccessDenied, match="only a supervisor may break the glass"):
        start_break_glass(policy, police("operator"), ["cam-1"], "suspect running north", NOW, 10)


def test_break_glass_is_refused_for_a_disabled_supervisor(policy: Policy) -> None:
    with pytest.raises(AccessDenied, match="is disabled"):
        start_break_glass(
            policy, police("supervisor", enabled=False), ["cam-1"], "suspect running", NOW, 10
        )


@pytest.mark.parametrize("reason", ["", "   ", "urgent!"])
def test_break_glass_is_refused_without_a_written_reason(policy: Policy, reason: str) -> None:
    with pytest.raises(ValueError, match="written reason of at least 10 characters"):
        start_break_glass(policy, police("supervisor"), ["cam-1"], reason, NOW, 10)


def test_break_glass_needs_a_scope_and_positive_minutes(policy: Policy) -> None:
    with pytest.raises(ValueError, match="at least one camera or district"):
        start_break_glass(policy, police("supervisor"), [], "suspect running north", NOW, 10)
    with pytest.raises(ValueError, match="positive whole number"):
        start_break_glass(policy, police("supervisor"), ["cam-1"], "suspect running", NOW, 0)


def test_break_glass_window_longer_than_30_minutes_cannot_exist() -> None:
    with pytest.raises(ValueError, match="at most 30 minutes"):
        BreakGlass(
            breakglass_id="BG-1",
            operator_id="op",
            reason="a long enough reason",
            started_at=NOW,
            expires_at=NOW + timedelta(minutes=31),
            camera_ids=frozenset({"cam-1"}),
        )


def test_break_glass_is_personal_scoped_and_stoppable(policy: Policy) -> None:
    supervisor = police("supervisor")
    window = start_break_glass(
        policy, supervisor, [], "flash flood in the underpass", NOW, 20, district_ids=["jung"]
    )
    inside = camera_at(*CITY_HALL, district="jung")
    outside = camera_at(*CITY_HALL, district="mapo", camera_id="cam-9")
    colleague = replace(supervisor, operator_id="op-police-2")

    assert decide_view(policy, supervisor, inside, None, NOW, window).allowed
    assert (
        "does not cover camera cam-9"
        in decide_view(policy, supervisor, outside, None, NOW, window).reason
    )
    assert (
        "belongs to another operator"
        in decide_view(policy, colleague, inside, None, NOW, window).reason
    )
    demoted = replace(supervisor, role=Role.OPERATOR)
    assert "needs role supervisor" in decide_view(policy, demoted, inside, None, NOW, window).reason
    stopped = window.stop(NOW + timedelta(minutes=1))
    assert (
        "was stopped"
        in decide_view(policy, supervisor, inside, None, NOW + timedelta(minutes=2), stopped).reason
    )


def test_denial_names_every_basis_that_failed(policy: Policy) -> None:
    supervisor = police("supervisor")
    window = start_break_glass(policy, supervisor, ["cam-2"], "armed man on the platform", NOW, 5)
    camera = camera_at(*metres_north(*CITY_HALL, 812))
    decision = decide_view(policy, supervisor, camera, robbery(policy), NOW, window)
    assert decision.reason == (
        "camera is 812 m from the incident, outside its 500 m radius; "
        f"break-glass {window.breakglass_id} does not cover camera cam-1"
    )


def test_unknown_role_is_rejected_when_building_an_operator() -> None:
    with pytest.raises(ValueError, match="unknown role 'viewer'"):
        Operator("op", "X", "police-112", "viewer")  # type: ignore[arg-type]


# Property: decide_view agrees with an independent reference --------------------------------------

_RAW = tomllib.loads(SHIPPED_POLICY.read_text(encoding="utf-8"))
_REF_SERVICES: dict[str, dict[str, Any]] = _RAW["services"]
_REF_OWNER = {
    incident_type: name
    for name, service in _REF_SERVICES.items()
    for incident_type in service.get("incident_types", [])
}
_REF_REFUSED = set(_RAW["refused_incident_types"])
_INVALID_TYPES = ["shoplifting-ish", "alien-landing", "jaywalk"]
_DISTRICTS = ["jung", "mapo", "gangnam"]
_AGENCIES = [*_RAW["agencies"], *(f"district:{d}" for d in _DISTRICTS), "district:seocho"]
_ROLES = ["operator", "supervisor", "auditor", "admin"]
_EARTH_M = 6_371_008.8
_OPENED = datetime(2025, 5, 1, 3, 0, tzinfo=UTC)


@dataclass(frozen=True)
class RefIncident:
    """The incident as the reference computes it straight from the TOML."""

    agencies: frozenset[str]
    radius_m: float
    opened_at: datetime
    expires_at: datetime
    closed_at: datetime | None
    lat: float
    lon: float


def ref_distance(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Arc length from the straight chord between the two points on the unit sphere."""

    def unit(lat: float, lon: float) -> tuple[float, float, float]:
        la, lo = math.radians(lat), math.radians(lon)
        return (math.cos(la) * math.cos(lo), math.cos(la) * math.sin(lo), math.sin(la))

    chord = math.dist(unit(lat1, lon1), unit(lat2, lon2))
    return 2 * _EARTH_M * math.asin(chord / 2)


def reference_decision(
    operator: Operator,
    camera: CameraPlace,
    incident: RefIncident | None,
    now: datetime,
    window: BreakGlass | None,
) -> tuple[bool, str]:
    """The rules of the brief, written out plainly."""
    if not operator.enabled or operator.role not in ("operator", "supervisor"):
        return False, "none"
    if operator.agency == "district:" + camera.district_id:
        return True, "district-own"
    if incident is not None:
        closed = incident.closed_at is not None and incident.closed_at <= now
        in_time = incident.opened_at <= now < incident.expires_at
        admitted = operator.agency in incident.agencies
        near = ref_distance(incident.lat, incident.lon, camera.lat, camera.lon) <= incident.radius_m
        if not closed and in_time and admitted and near:
            return True, "incident"
    if window is not None:
        mine = window.operator_id == operator.operator_id and operator.role == "supervisor"
        running = window.started_at <= now < window.expires_at and (
            window.stopped_at is None or window.stopped_at > now
        )
        covered = camera.camera_id in window.camera_ids or camera.district_id in window.district_ids
        if mine and running and covered:
            return True, "break-glass"
    return False, "none"


@dataclass(frozen=True)
class Scenario:
    operator: Operator
    camera: CameraPlace
    incident_type: str
    service: str | None
    lat: float
    lon: float
    radius_asked: float | None
    now: datetime
    closed_at: datetime | None
    window: BreakGlass | None


def point_at(lat: float, lon: float, metres: float, bearing: float) -> tuple[float, float]:
    """The point ``metres`` from (lat, lon) along ``bearing`` on the sphere (destination formula)."""
    la, lo, arc = math.radians(lat), math.radians(lon), metres / _EARTH_M
    la2 = math.asin(math.sin(la) * math.cos(arc) + math.cos(la) * math.sin(arc) * math.cos(bearing))
    lo2 = lo + math.atan2(
        math.sin(bearing) * math.sin(arc) * math.cos(la),
        math.cos(arc) - math.sin(la) * math.sin(la2),
    )
    return math.degrees(la2), math.degrees(lo2)


_FOCI = ["incident"] * 3 + ["break-glass"] * 3 + ["district-own", "anything"]
_CONDITIONS = {
    "incident": [
        "inc-type",
        "inc-agency",
        "inc-far",
        "inc-edge",
        "inc-early",
        "inc-expiry",
        "inc-late",
        "inc-closed-now",
        "inc-closed-before",
        "role",
        "enabled",
    ],
    "break-glass": [
        "bg-owner",
        "bg-supervisor",
        "bg-early",
        "bg-expiry",
        "bg-late",
        "bg-stopped-now",
        "bg-stopped-before",
        "bg-scope",
        "enabled",
    ],
    "district-own": ["own-agency", "role", "enabled"],
    "anything": [],
}


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """Random scenarios, most of them one condition away from being allowed.

    Each example focuses on one basis and breaks at most one of its conditions (or none), so
    that an almost correct ``decide_view`` shows; edges (the radius, the time box, the window's
    ends, a close at the very moment) are drawn on purpose. Conditions outside the focus, and
    every condition of an "anything" example, are coin tosses.
    """
    focus = draw(st.sampled_from(_FOCI))
    broken = draw(st.sampled_from([None, None, None, *_CONDITIONS[focus]]))

    def holds(condition: str) -> bool:
        if condition in _CONDITIONS[focus]:
            return condition != broken
        return draw(st.booleans())

    # The incident: type, service, place, radius.
    valid_types = sorted(_REF_OWNER)
    invalid_types = sorted(_REF_REFUSED) + _INVALID_TYPES
    if focus == "incident":
        incident_type = draw(st.sampled_from(valid_types if holds("inc-type") else invalid_types))
    else:
        incident_type = draw(st.sampled_from(valid_types + invalid_types))
    service = None
    if _REF_OWNER.get(incident_type) == "112-emergency-video" and draw(st.booleans()):
        service = "112-emergency-dispatch"
    known = _REF_SERVICES.get(service or _REF_OWNER.get(incident_type, ""), {})
    lat = draw(st.floats(37.4, 37.7))
    lon = draw(st.floats(126.8, 127.2))
    radius_asked = draw(st.none() | st.floats(20, 25_000))
    ceiling = float(known.get("max_radius_m", math.inf))
    radius_m = min(
        float(known.get("default_radius_m", 500)) if radius_asked is None else radius_asked, ceiling
    )

    # The camera: inside, just inside, just outside, outside the radius, or anywhere.
    district = draw(st.sampled_from(_DISTRICTS))
    if focus != "incident":
        reach = draw(st.sampled_from(["inside", "anywhere"]))
    elif not holds("inc-edge"):
        reach = "edge-out"
    elif not holds("inc-far"):
        reach = draw(st.sampled_from(["outside", "anywhere"]))
    else:
        reach = draw(st.sampled_from(["inside", "inside", "edge-in"]))
    if reach == "anywhere":
        cam_lat, cam_lon = draw(st.floats(37.4, 37.7)), draw(st.floats(126.8, 127.2))
    else:
        metres = {
            "inside": lambda: draw(st.floats(0, radius_m * 0.999)),
            "edge-in": lambda: radius_m * (1 - 1e-5),
            "edge-out": lambda: radius_m * (1 + 1e-5),
            "outside": lambda: draw(st.floats(radius_m * 1.001, radius_m * 3)),
        }[reach]()
        cam_lat, cam_lon = point_at(lat, lon, metres, draw(st.floats(0, 2 * math.pi)))
    camera = CameraPlace(draw(st.sampled_from(["cam-1", "cam-2"])), district, cam_lat, cam_lon)

    # The operator.
    own = f"district:{district}"
    if focus == "district-own":
        agency = (
            own if holds("own-agency") else draw(st.sampled_from(sorted(set(_AGENCIES) - {own})))
        )
    elif focus == "incident":
        admitted = sorted(known.get("agencies", []))
        others = sorted(set(_AGENCIES) - set(admitted) - {own})
        agency = draw(st.sampled_from(admitted if admitted and holds("inc-agency") else others))
    elif focus == "break-glass":
        agency = draw(st.sampled_from(sorted(set(_AGENCIES) - {own})))
    else:
        agency = draw(st.sampled_from(_AGENCIES))
    if focus == "break-glass":
        supervisor = holds("bg-supervisor")
        role = "supervisor" if supervisor else "operator"
    elif focus == "anything":
        role = draw(st.sampled_from(_ROLES))
    else:
        role = draw(
            st.sampled_from(["operator", "supervisor"] if holds("role") else ["auditor", "admin"])
        )
    enabled = (
        holds("enabled") if focus != "anything" else draw(st.sampled_from([True] * 5 + [False]))
    )
    operator = Operator(
        draw(st.sampled_from(["op-1", "op-2"])), "Someone", agency, Role(role), enabled
    )

    # Time: within the time box, before or after it, on its edges; closed before, at or after now.
    box_s = int(known.get("time_box_minutes", 120)) * 60
    if focus != "incident":
        now_s = draw(st.integers(-box_s // 4, box_s + box_s // 4))
    elif not holds("inc-early"):
        now_s = draw(st.sampled_from([-1]) | st.integers(-box_s // 4, -1))
    elif not holds("inc-expiry"):
        now_s = box_s
    elif not holds("inc-late"):
        now_s = draw(st.integers(box_s + 1, box_s + box_s // 4))
    else:
        now_s = draw(st.sampled_from([0, box_s - 1]) | st.integers(0, box_s - 1))
    now = _OPENED + timedelta(seconds=now_s)
    closed_at = None
    if focus != "incident":
        if draw(st.booleans()):
            closed_at = _OPENED + timedelta(seconds=draw(st.integers(0, box_s)))
    elif not holds("inc-closed-now"):
        closed_at = now
    elif not holds("inc-closed-before"):
        closed_at = _OPENED + timedelta(seconds=draw(st.integers(0, max(0, now_s - 1))))
    elif draw(st.booleans()):
        later_s = now_s + draw(st.sampled_from([1]) | st.integers(1, box_s))
        closed_at = _OPENED + timedelta(seconds=max(0, later_s))

    # The break-glass window: whose, when, stopped or not, over what.
    window = None
    if focus == "break-glass" or draw(st.booleans()):
        duration_s = draw(st.integers(1, 30 * 60))
        if not holds("bg-early"):
            start_s = draw(st.sampled_from([1]) | st.integers(1, 5 * 60))
        elif not holds("bg-expiry"):
            start_s = -duration_s
        elif not holds("bg-late"):
            start_s = draw(st.integers(-35 * 60, -duration_s))
        else:
            start_s = draw(st.sampled_from([0, 1 - duration_s]) | st.integers(1 - duration_s, 0))
        stopped = None
        if not holds("bg-stopped-now"):
            stopped = now + timedelta(seconds=max(start_s, 0))
        elif not holds("bg-stopped-before"):
            stopped = now + timedelta(seconds=max(start_s, draw(st.integers(min(start_s, 0), 0))))
        elif draw(st.booleans()):
            stopped = now + timedelta(seconds=max(start_s, draw(st.integers(1, 30 * 60))))
        if holds("bg-scope"):
            camera_ids, district_ids = draw(
                st.sampled_from(
                    [
                        (frozenset({camera.camera_id}), frozenset()),
                        (frozenset({"cam-7"}), frozenset({district})),
                        (frozenset({"cam-1", "cam-2"}), frozenset({"seocho"})),
                    ]
                )
            )
        else:
            camera_ids = frozenset({"cam-7"})
            district_ids = draw(st.sampled_from([frozenset(), frozenset({"seocho"})]))
        window = BreakGlass(
            breakglass_id="BG-P",
            operator_id=operator.operator_id if holds("bg-owner") else "op-9",
            reason="property test window",
            started_at=now + timedelta(seconds=start_s),
            expires_at=now + timedelta(seconds=start_s + duration_s),
            camera_ids=camera_ids,
            district_ids=district_ids,
            stopped_at=stopped,
        )
    return Scenario(
        operator, camera, incident_type, service, lat, lon, radius_asked, now, closed_at, window
    )


def reference_incident(scenario: Scenario) -> RefIncident | None:
    name = scenario.service or _REF_OWNER.get(scenario.incident_type)
    if name is None:
        return None
    service = _REF_SERVICES[name]
    default, ceiling = float(service["default_radius_m"]), float(service["max_radius_m"])
    asked = default if scenario.radius_asked is None else scenario.radius_asked
    return RefIncident(
        agencies=frozenset(service["agencies"]),
        radius_m=min(asked, ceiling),
        opened_at=_OPENED,
        expires_at=_OPENED + timedelta(minutes=int(service["time_box_minutes"])),
        closed_at=scenario.closed_at,
        lat=scenario.lat,
        lon=scenario.lon,
    )


def test_decide_view_agrees_with_the_reference(policy: Policy) -> None:
    outcomes: Counter[str] = Counter()

    @settings(
        max_examples=500,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(scenarios())
    def check(scenario: Scenario) -> None:
        expected_incident = reference_incident(scenario)
        incident: Incident | None = None
        try:
            incident = policy.open_incident(
                scenario.incident_type,
                scenario.lat,
                scenario.lon,
                scenario.radius_asked,
                _OPENED - timedelta(minutes=1),
                _OPENED,
                "ext",
                service=scenario.service,
                incident_id="INC-P",
                clamp=True,  # the reference clamps; refusing is tested on its own
            )
        except AccessDenied:
            assert scenario.incident_type in _REF_REFUSED
        except ValueError:
            assert scenario.incident_type in _INVALID_TYPES
        assert (incident is None) == (expected_incident is None)
        if incident is not None and scenario.closed_at is not None:
            incident = incident.close(scenario.closed_at)

        # Skip the sub-millimetre band where two correct distance formulas may round apart.
        if expected_incident is not None:
            gap = (
                ref_distance(
                    expected_incident.lat,
                    expected_incident.lon,
                    scenario.camera.lat,
                    scenario.camera.lon,
                )
                - expected_incident.radius_m
            )
            if abs(gap) < 1e-3:
                return

        decision = decide_view(
            policy, scenario.operator, scenario.camera, incident, scenario.now, scenario.window
        )
        expected = reference_decision(
            scenario.operator, scenario.camera, expected_incident, scenario.now, scenario.window
        )
        assert (decision.allowed, str(decision.basis)) == expected, decision.reason
        assert decision.reason
        if decision.allowed:
            assert decision.expires_at is not None and decision.expires_at > scenario.now
        else:
            assert decision.expires_at is None
        outcomes[expected[1]] += 1

    check()
    assert set(outcomes) == {"none", "district-own", "incident", "break-glass"}, outcomes
