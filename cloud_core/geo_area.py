"""A declared disaster's area: a GeoJSON polygon, whole named districts, or both.

:func:`parse_area` turns what a disaster room sends into a validated :class:`GeoArea`, or raises
:class:`AreaError` saying exactly what is wrong: not GeoJSON, not a polygon, a coordinate off the
globe, too few or too many vertices (at most :data:`MAX_VERTICES`), a ring that crosses itself
(naming the two edges). :meth:`GeoArea.covers` decides whether a camera is inside (even-odd rule,
so holes work). Pure code, no I/O: a 10,000-vertex polygon is checked in well under a second by
bucketing its edges into a grid, and callers on the event loop run it in a thread anyway.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Final

MAX_VERTICES: Final = 10_000
"""Most vertices an area's polygon may have, over all its rings."""

MAX_GEOJSON_CHARS: Final = 1_000_000
"""Longest GeoJSON text accepted (10,000 vertices fit easily)."""

MAX_DISTRICTS: Final = 100

LonLat = tuple[float, float]
Ring = tuple[LonLat, ...]


class AreaError(ValueError):
    """The area is not usable; the message says why."""


@dataclass(frozen=True, slots=True)
class GeoArea:
    """Rings of (lon, lat) positions as GeoJSON has them (first the outer ring, then holes),
    and whole districts by id. A camera is inside when it is in a district or in the polygon."""

    rings: tuple[Ring, ...] = ()
    district_ids: frozenset[str] = field(default_factory=frozenset)
    _box: tuple[float, float, float, float] | None = field(init=False, default=None,
                                                           repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.rings:
            lons = [p[0] for p in self.rings[0]]
            lats = [p[1] for p in self.rings[0]]
            object.__setattr__(self, "_box", (min(lats), min(lons), max(lats), max(lons)))

    def covers(self, district_id: str, lat: float, lon: float) -> bool:
        if district_id in self.district_ids:
            return True
        box = self.bounds()
        if box is None or not (box[0] <= lat <= box[2] and box[1] <= lon <= box[3]):
            return False
        return contains(self.rings, lat, lon)

    @property
    def vertices(self) -> int:
        return sum(len(ring) - 1 for ring in self.rings)

    def bounds(self) -> tuple[float, float, float, float] | None:
        """(min_lat, min_lon, max_lat, max_lon) of the polygon; None without one."""
        return self._box

    def centre(self) -> tuple[float, float] | None:
        """The middle of the polygon's bounding box, as (lat, lon)."""
        box = self.bounds()
        return None if box is None else ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)

    def geojson(self) -> dict[str, Any] | None:
        if not self.rings:
            return None
        return {"type": "Polygon", "coordinates": [[list(p) for p in ring] for ring in self.rings]}


def contains(rings: Sequence[Ring], lat: float, lon: float) -> bool:
    """Whether (lat, lon) is inside the polygon, by the even-odd rule (ray cast towards +lon)."""
    inside = False
    for ring in rings:
        for (x1, y1), (x2, y2) in pairwise(ring):
            if (y1 > lat) != (y2 > lat) and lon < x1 + (lat - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
    return inside


def parse_area(geojson: str | dict[str, Any] | None, district_ids: Iterable[str] = (),
               known_districts: Iterable[str] | None = None) -> GeoArea:
    """A validated area from GeoJSON text or object (Polygon, or a Feature holding one) and/or
    district ids (each must be a known district when ``known_districts`` is given)."""
    districts = frozenset(d.strip() for d in district_ids)
    if len(districts) > MAX_DISTRICTS:
        raise AreaError(f"an area names at most {MAX_DISTRICTS} districts, got {len(districts)}")
    if "" in districts:
        raise AreaError("a district id in the area is empty")
    if known_districts is not None:
        unknown = sorted(districts - set(known_districts))
        if unknown:
            raise AreaError(f"unknown district(s) in the area: {', '.join(unknown)}")
    rings = _rings(_document(geojson)) if geojson else ()
    if not rings and not districts:
        raise AreaError("an area needs a polygon or at least one district")
    return GeoArea(rings, districts)


def _document(geojson: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(geojson, str):
        if len(geojson) > MAX_GEOJSON_CHARS:
            raise AreaError(f"the area's GeoJSON is {len(geojson)} characters long; at most "
                            f"{MAX_GEOJSON_CHARS} are allowed")
        try:
            geojson = json.loads(geojson)
        except json.JSONDecodeError as exc:
            raise AreaError(f"the area is not JSON: {exc}") from exc
    if not isinstance(geojson, dict):
        raise AreaError("the area must be a GeoJSON object")
    if geojson.get("type") == "Feature":
        geometry = geojson.get("geometry")
        if not isinstance(geometry, dict):
            raise AreaError("the area's Feature has no geometry")
        geojson = geometry
    if geojson.get("type") != "Polygon":
        raise AreaError(f"the area must be a GeoJSON Polygon, not {geojson.get('type')!r}")
    return geojson


def _rings(polygon: dict[str, Any]) -> tuple[Ring, ...]:
    raw = polygon.get("coordinates")
    if not isinstance(raw, list) or not raw:
        raise AreaError("the polygon's coordinates must be a non-empty list of rings")
    total = sum(len(ring) for ring in raw if isinstance(ring, list))
    if total > MAX_VERTICES + len(raw):
        raise AreaError(f"the polygon has {total} vertices; at most {MAX_VERTICES} are allowed")
    rings = tuple(_ring(index, ring) for index, ring in enumerate(raw))
    crossing = first_crossing(rings)
    if crossing is not None:
        (ring_a, edge_a), (ring_b, edge_b) = crossing
        raise AreaError(f"the polygon crosses itself: edge {edge_a} of ring {ring_a} crosses "
                        f"edge {edge_b} of ring {ring_b}")
    return rings


def _ring(index: int, raw: object) -> Ring:
    if not isinstance(raw, list):
        raise AreaError(f"ring {index} must be a list of [lon, lat] positions")
    points: list[LonLat] = []
    for n, position in enumerate(raw):
        if (not isinstance(position, list) or len(position) < 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool)
                           for v in position[:2])):
            raise AreaError(f"ring {index} position {n} must be [lon, lat] numbers")
        lon, lat = float(position[0]), float(position[1])
        if not (math.isfinite(lon) and -180 <= lon <= 180 and math.isfinite(lat)
                and -90 <= lat <= 90):
            raise AreaError(f"ring {index} position {n} ({lon}, {lat}) is not [lon, lat] on the "
                            "globe (lon -180..180, lat -90..90)")
        if not points or points[-1] != (lon, lat):
            points.append((lon, lat))
    if len(points) > 1 and points[0] == points[-1]:
        points.pop()
    if len(set(points)) < 3:
        raise AreaError(f"ring {index} needs at least 3 distinct positions, got {len(set(points))}")
    return (*points, points[0])


def first_crossing(rings: Sequence[Ring]) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The first two edges (ring, edge index) that cross or touch, other than neighbours."""
    edges = [(r, i, ring[i], ring[i + 1]) for r, ring in enumerate(rings)
             for i in range(len(ring) - 1)]
    lons = [p[0] for ring in rings for p in ring]
    lats = [p[1] for ring in rings for p in ring]
    cells = max(1, int(math.sqrt(len(edges))))
    west, south = min(lons), min(lats)
    width = (max(lons) - west) / cells or 1.0
    height = (max(lats) - south) / cells or 1.0
    grid: dict[tuple[int, int], list[int]] = defaultdict(list)
    for k, (_, _, a, b) in enumerate(edges):
        x0, x1 = sorted((int((a[0] - west) / width), int((b[0] - west) / width)))
        y0, y1 = sorted((int((a[1] - south) / height), int((b[1] - south) / height)))
        for x in range(x0, x1 + 1):
            for y in range(y0, y1 + 1):
                grid[(x, y)].append(k)
    sizes = {r: len(ring) - 1 for r, ring in enumerate(rings)}
    for bucket in grid.values():
        for m, k in enumerate(bucket):
            for j in bucket[m + 1:]:
                if _neighbours(edges[k][:2], edges[j][:2], sizes):
                    continue
                if _segments_meet(edges[k][2], edges[k][3], edges[j][2], edges[j][3]):
                    first, second = sorted((edges[k][:2], edges[j][:2]))
                    return first, second
    return None


def _neighbours(a: tuple[int, int], b: tuple[int, int], sizes: dict[int, int]) -> bool:
    if a[0] != b[0]:
        return False
    n = sizes[a[0]]
    return abs(a[1] - b[1]) in (1, n - 1)


def _orientation(p: LonLat, q: LonLat, r: LonLat) -> int:
    value = (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])
    return (value > 0) - (value < 0)


def _on_segment(p: LonLat, q: LonLat, r: LonLat) -> bool:
    return (min(p[0], r[0]) <= q[0] <= max(p[0], r[0])
            and min(p[1], r[1]) <= q[1] <= max(p[1], r[1]))


def _segments_meet(p1: LonLat, p2: LonLat, q1: LonLat, q2: LonLat) -> bool:
    o1, o2 = _orientation(p1, p2, q1), _orientation(p1, p2, q2)
    o3, o4 = _orientation(q1, q2, p1), _orientation(q1, q2, p2)
    if o1 != o2 and o3 != o4:
        return True
    return ((o1 == 0 and _on_segment(p1, q1, p2)) or (o2 == 0 and _on_segment(p1, q2, p2))
            or (o3 == 0 and _on_segment(q1, p1, q2)) or (o4 == 0 and _on_segment(q1, p2, q2)))
