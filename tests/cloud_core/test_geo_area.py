"""Declared disaster areas: polygons and whole districts, checked against an independent
point-in-polygon reference (winding number), bad polygons refused, extensions on the record."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cloud_core.access import AreaRequest
from cloud_core.exceptions import InvalidRequest
from cloud_core.geo_area import MAX_VERTICES, AreaError, first_crossing, parse_area
from simulators.pilot_districts import GANGNAM, MAPO
from tests.cloud_core.test_moving_incidents import World

LonLat = tuple[float, float]


# An independent reference -----------------------------------------------------------------------


def winding_number(ring: list[LonLat], lat: float, lon: float) -> int:
    """Sunday's winding number of the closed ``ring`` around (lon, lat)."""
    def side(a: LonLat, b: LonLat) -> float:
        return (b[0] - a[0]) * (lat - a[1]) - (lon - a[0]) * (b[1] - a[1])

    winding = 0
    for a, b in zip(ring, ring[1:] + ring[:1], strict=True):
        if a[1] <= lat < b[1] and side(a, b) > 0:
            winding += 1
        elif b[1] <= lat < a[1] and side(a, b) < 0:
            winding -= 1
    return winding


def distance_to_edges(ring: list[LonLat], lat: float, lon: float) -> float:
    best = math.inf
    for a, b in zip(ring, ring[1:] + ring[:1], strict=True):
        dx, dy = b[0] - a[0], b[1] - a[1]
        t = max(0.0, min(1.0, ((lon - a[0]) * dx + (lat - a[1]) * dy) / (dx * dx + dy * dy)))
        best = min(best, math.hypot(lon - (a[0] + t * dx), lat - (a[1] + t * dy)))
    return best


def naive_crossing(ring: list[LonLat]) -> bool:
    def orient(p: LonLat, q: LonLat, r: LonLat) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    n = len(ring)
    edges = [(ring[i], ring[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue
            (p1, p2), (q1, q2) = edges[i], edges[j]
            d = [orient(p1, p2, q1), orient(p1, p2, q2), orient(q1, q2, p1), orient(q1, q2, p2)]
            if d[0] * d[1] < 0 and d[2] * d[3] < 0:
                return True
    return False


@st.composite
def star_polygons(draw: st.DrawFn, centre: LonLat = (127.04, 37.50)) -> list[LonLat]:
    """Simple polygons: vertices at increasing angles around a centre, at random distances."""
    n = draw(st.integers(3, 40))
    # Gaps between successive angles, each under half a turn: the centre sees every edge, so
    # the polygon is simple (built, not filtered, so generation never starves).
    weights = draw(st.lists(st.floats(1.0, 1.9), min_size=n, max_size=n))
    start = draw(st.floats(0, 2 * math.pi))
    angles = list(itertools.accumulate((w / sum(weights) * 2 * math.pi for w in weights[:-1]),
                                       initial=start))
    radii = draw(st.lists(st.floats(0.005, 0.06), min_size=n, max_size=n))
    return [(centre[0] + r * math.cos(a), centre[1] + r * math.sin(a))
            for a, r in zip(angles, radii, strict=True)]


def polygon(ring: list[LonLat]) -> dict[str, object]:
    return {"type": "Polygon", "coordinates": [[list(p) for p in [*ring, ring[0]]]]}


# Properties -------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(ring=star_polygons(), lat=st.floats(37.43, 37.57), lon=st.floats(126.97, 127.11))
def test_covers_agrees_with_the_winding_number(ring: list[LonLat], lat: float, lon: float) -> None:
    assume(distance_to_edges(ring, lat, lon) > 1e-9)
    area = parse_area(polygon(ring))
    assert area.covers("nowhere", lat, lon) == (winding_number(ring, lat, lon) != 0)


@settings(max_examples=200, deadline=None)
@given(points=st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=3,
                       max_size=25, unique=True))
def test_the_grid_finds_a_crossing_exactly_when_the_naive_check_does(
        points: list[tuple[int, int]]) -> None:
    ring = [(127.0 + x / 100, 37.5 + y / 100) for x, y in points]
    closed = (*ring, ring[0])
    naive = naive_crossing(ring)
    found = first_crossing([closed]) is not None
    # The grid also reports touching and collinear overlaps, which the naive check leaves out.
    assert found or not naive


_PILOT = [(c, d.district_id) for d in (GANGNAM, MAPO) for c in d.cameras]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ring=star_polygons())
def test_a_polygon_area_lists_exactly_the_cameras_inside_it(ring: list[LonLat]) -> None:
    assume(all(distance_to_edges(ring, c.lat, c.lon) > 1e-9 for c, _ in _PILOT))
    world = World()
    try:
        room = world.caller("han", "disaster-room")
        report = asyncio.run(world.access.report_incident(
            room, incident_type="flood", lat=None, lon=None,
            area=AreaRequest(json.dumps(polygon(ring)))))
        listed = {c.camera_id for c in report.cameras}
        inside = {c.camera_id for c, _ in _PILOT if winding_number(ring, c.lat, c.lon) != 0}
        assert listed == inside
    finally:
        world.registry.close()


# Bad areas --------------------------------------------------------------------------------------


BOWTIE: dict[str, object] = {"type": "Polygon", "coordinates": [[[127.0, 37.5], [127.1, 37.6], [127.1, 37.5],
                                              [127.0, 37.6], [127.0, 37.5]]]}


@pytest.mark.parametrize(("area", "problem"), [
    (BOWTIE, "crosses itself: edge 0 of ring 0 crosses edge 2 of ring 0"),
    ({"type": "Polygon", "coordinates": [[[127.0, 37.5], [127.1, 37.5]]]}, "at least 3 distinct"),
    ({"type": "Polygon", "coordinates": [[[127.0, 37.5], [127.1, 97.5], [127.1, 37.6]]]},
     "not [lon, lat] on the globe"),
    ({"type": "Point", "coordinates": [127.0, 37.5]}, "must be a GeoJSON Polygon, not 'Point'"),
    ({"type": "Polygon", "coordinates": [[[127.0, "x"], [127.1, 37.5], [127.1, 37.6]]]},
     "must be [lon, lat] numbers"),
    ("{not json", "not JSON"),
])
def test_bad_polygons_are_refused_naming_the_problem(area: object, problem: str) -> None:
    with pytest.raises(AreaError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        parse_area(area)  # type: ignore[arg-type]


def test_a_polygon_of_a_million_vertices_is_refused_before_any_work() -> None:
    ring = [[127.0 + i * 1e-7, 37.5] for i in range(1_000_000)]
    with pytest.raises(AreaError, match=f"1000000 vertices; at most {MAX_VERTICES}"):
        parse_area({"type": "Polygon", "coordinates": [ring]})
    with pytest.raises(AreaError, match="at most 1000000 are allowed"):
        parse_area(json.dumps({"type": "Polygon", "coordinates": [ring]}))


def test_ten_thousand_vertices_are_checked_quickly() -> None:
    ring = [[127.0 + 0.05 * math.cos(2 * math.pi * i / MAX_VERTICES),
             37.5 + 0.05 * math.sin(2 * math.pi * i / MAX_VERTICES)] for i in range(MAX_VERTICES)]
    area = parse_area({"type": "Polygon", "coordinates": [ring]})
    assert area.vertices == MAX_VERTICES and area.covers("x", 37.5, 127.0)


# Through the access layer -----------------------------------------------------------------------


async def test_whole_districts_polygons_refusals_and_extensions() -> None:
    world = World()
    try:
        room = world.caller("han", "disaster-room")
        police = world.caller("kim", "police-112")
        whole = await world.access.report_incident(
            room, incident_type="flood", lat=37.55, lon=126.92,
            area=AreaRequest(None, ("mapo",)))
        assert {c.camera_id for c in whole.cameras} == {c.camera_id for c in MAPO.cameras}
        before = list(world.audit.entries)
        for area, problem in [(AreaRequest(BOWTIE), "crosses itself"),
                              (AreaRequest(None, ("atlantis",)), "unknown district"),
                              (None, "beyond the maximum of 20000 m")]:
            with pytest.raises(InvalidRequest, match=problem):
                await world.access.report_incident(room, incident_type="flood", lat=37.5,
                                                   lon=127.0, radius_m=50_000, area=area)
        with pytest.raises(InvalidRequest, match="cover a radius, not a declared area"):
            await world.access.report_incident(police, incident_type="robbery", lat=37.5,
                                               lon=127.0, area=AreaRequest(None, ("mapo",)))
        assert world.audit.entries == before

        incident_id = whole.incident.incident.incident_id
        ends = whole.incident.incident.expires_at
        extended = await world.access.extend_incident(room, incident_id, 24 * 60,
                                                      "river still rising at Mangwon")
        assert extended.incident.expires_at == ends + timedelta(days=1)
        assert world.audit.actions()[-1] == "incident.extend"
        with pytest.raises(InvalidRequest, match="at least 10 characters"):
            await world.access.extend_incident(room, incident_id, 60, "rain")
        with pytest.raises(InvalidRequest, match="1 to 4320 minutes"):
            await world.access.extend_incident(room, incident_id, 10_000, "still raining hard")
        page, total = world.access.incident_cameras(room, incident_id, 15, 10)
        assert total == len(MAPO.cameras) and len(page) == total - 15
    finally:
        world.registry.close()
