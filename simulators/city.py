"""The whole city for the simulators: Seoul's 25 districts, their outlines and 68,000 cameras.

The districts, their offices, areas and camera counts come from ``simulators/data/
seoul-districts.csv`` (provenance in ``simulators/data/README.md``). Camera counts follow each
district's share of the city's CCTV (``cctv_at_68000``: Gangnam largest), scaled to any total.

The outlines are **approximate**: a power diagram (a Voronoi diagram whose cells can grow or
shrink by a weight) of the 25 district offices, clipped to a hand-drawn outline of the city
(about 600 km²), with the weights adjusted until each cell's area is close to the district's
real area, as far as keeping every office inside its own cell allows. Neighbours are the
right ones, most areas are within a few percent (the worst within a third); the borders
are straight lines, not the real ones. Good enough to draw a map, place cameras inside their own
district and exercise spatial queries at city scale; not a survey. A real deployment loads the
city's boundary file instead.

Everything here is deterministic: the same total gives the same cameras, ids and positions.
"""

from __future__ import annotations

import csv
import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_FILE = Path(__file__).resolve().parent / "data" / "seoul-districts.csv"
CITY_CAMERAS = 68_000
SEED = 20171025  # the city's smart-city agreement, October 2017

LatLon = tuple[float, float]

#: Seoul's outer boundary, hand-simplified (lat, lon; clockwise from Gangseo in the west).
CITY_OUTLINE: tuple[LatLon, ...] = (
    (37.5585, 126.7720), (37.5840, 126.7990), (37.5985, 126.8380), (37.6030, 126.8810),
    (37.6330, 126.9000), (37.6550, 126.9430), (37.6740, 126.9870), (37.6930, 127.0020),
    (37.7070, 127.0410), (37.6880, 127.0840), (37.6560, 127.1030), (37.6140, 127.1030),
    (37.5810, 127.1080), (37.5670, 127.1450), (37.5620, 127.1730), (37.5290, 127.1680),
    (37.5010, 127.1490), (37.4780, 127.1260), (37.4640, 127.1030), (37.4460, 127.0650),
    (37.4410, 127.0280), (37.4550, 126.9860), (37.4500, 126.9480), (37.4410, 126.9060),
    (37.4730, 126.8780), (37.4920, 126.8360), (37.5200, 126.8360), (37.5390, 126.8030),
)


@dataclass(frozen=True)
class CityDistrict:
    district_id: str
    name: str
    name_ko: str
    office: LatLon
    area_km2: float
    camera_count: int
    outline: tuple[LatLon, ...]  # lat, lon; not closed (the last vertex is not the first)


@dataclass(frozen=True)
class CityCamera:
    camera_id: str
    district_id: str
    name: str
    lat: float
    lon: float


@dataclass(frozen=True)
class _DistrictRow:
    district_id: str
    name: str
    name_ko: str
    office: LatLon
    area_km2: float
    share: int


def _rows() -> tuple[_DistrictRow, ...]:
    with DATA_FILE.open(encoding="utf-8", newline="") as handle:
        return tuple(
            _DistrictRow(row["district_id"], row["name"], row["name_ko"],
                         (float(row["office_lat"]), float(row["office_lon"])),
                         float(row["area_km2"]), int(row["cctv_at_68000"]))
            for row in csv.DictReader(handle)
        )


def apportion(shares: Sequence[int], total: int) -> list[int]:
    """Split ``total`` in proportion to ``shares`` (largest remainder): the counts sum to it."""
    whole = sum(shares)
    exact = [s * total / whole for s in shares]
    counts = [math.floor(e) for e in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: (counts[i] - exact[i], -shares[i]))
    for i in by_remainder[:total - sum(counts)]:
        counts[i] += 1
    return counts


def districts(total: int = CITY_CAMERAS) -> tuple[CityDistrict, ...]:
    """The 25 districts with ``total`` cameras shared between them (the city's 68,000 by default)."""
    rows = _rows()
    outlines = _outlines()
    counts = apportion([r.share for r in rows], total)
    return tuple(
        CityDistrict(r.district_id, r.name, r.name_ko, r.office, r.area_km2, count,
                     outlines[r.district_id])
        for r, count in zip(rows, counts, strict=True)
    )


def district_cameras(district: CityDistrict) -> tuple[CityCamera, ...]:
    """The district's cameras, ``<district>-0001`` …, uniformly spread inside its outline."""
    seed = SEED + sum(ord(c) for c in district.district_id) * 7919
    lats, lons = _points_inside(district.outline, district.camera_count, seed)
    return tuple(
        CityCamera(f"{district.district_id}-{i:04d}", district.district_id,
                   f"{district.name} camera {i:04d}", round(lat, 6), round(lon, 6))
        for i, (lat, lon) in enumerate(zip(lats.tolist(), lons.tolist(), strict=True), start=1)
    )


def city_cameras(total: int = CITY_CAMERAS) -> list[CityCamera]:
    """Every camera of the city, district by district."""
    return [camera for d in districts(total) for camera in district_cameras(d)]


def contains(outline: Sequence[LatLon], lat: float, lon: float) -> bool:
    """Whether (lat, lon) lies inside ``outline`` (even-odd rule)."""
    return bool(_inside(np.asarray(outline, dtype=float), np.array([lat]), np.array([lon]))[0])


def polygon_area_km2(outline: Sequence[LatLon]) -> float:
    xy = _to_km(np.asarray(outline, dtype=float))
    x, y = xy[:, 0], xy[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def outlines_geojson(city: Sequence[CityDistrict] | None = None) -> dict[str, object]:
    """District outlines as a GeoJSON FeatureCollection (lon, lat order; closed rings)."""
    features = []
    for district in city if city is not None else districts():
        ring = [[lon, lat] for lat, lon in district.outline]
        ring.append(ring[0])
        features.append({
            "type": "Feature",
            "properties": {"district_id": district.district_id, "name": district.name,
                           "name_ko": district.name_ko},
            "geometry": {"type": "Polygon", "coordinates": [ring]},
        })
    return {"type": "FeatureCollection", "features": features}


def write_outlines_geojson(path: Path, city: Sequence[CityDistrict] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(outlines_geojson(city)) + "\n", encoding="utf-8")
    return path


# --- geometry: a local plane in km, power-diagram cells, sampling ------------------------------

_LAT0, _LON0 = 37.55, 126.98
_KM_PER_LAT = 110.57
_KM_PER_LON = 111.32 * math.cos(math.radians(_LAT0))


def _to_km(latlon: np.ndarray) -> np.ndarray:
    return np.column_stack(((latlon[:, 1] - _LON0) * _KM_PER_LON, (latlon[:, 0] - _LAT0) * _KM_PER_LAT))


def _to_latlon(xy: np.ndarray) -> np.ndarray:
    return np.column_stack((xy[:, 1] / _KM_PER_LAT + _LAT0, xy[:, 0] / _KM_PER_LON + _LON0))


def _clip(polygon: list[tuple[float, float]], normal: tuple[float, float],
          bound: float) -> list[tuple[float, float]]:
    """Sutherland-Hodgman: the part of ``polygon`` where normal·p <= bound."""
    out: list[tuple[float, float]] = []
    nx, ny = normal
    for i, current in enumerate(polygon):
        previous = polygon[i - 1]
        c_in = nx * current[0] + ny * current[1] - bound
        p_in = nx * previous[0] + ny * previous[1] - bound
        if (c_in <= 0) != (p_in <= 0):
            t = p_in / (p_in - c_in)
            out.append((previous[0] + t * (current[0] - previous[0]),
                        previous[1] + t * (current[1] - previous[1])))
        if c_in <= 0:
            out.append(current)
    return out


def _cells(sites: np.ndarray, weights: np.ndarray,
           city: list[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """Power-diagram cells: p is in cell i where |p-s_i|² - w_i is smallest."""
    cells = []
    for i, (si, wi) in enumerate(zip(sites, weights, strict=True)):
        cell = city
        for j, (sj, wj) in enumerate(zip(sites, weights, strict=True)):
            if i == j or not cell:
                continue
            normal = (2 * (sj[0] - si[0]), 2 * (sj[1] - si[1]))
            bound = float(sj @ sj - si @ si - wj + wi)
            cell = _clip(cell, normal, bound)
        cells.append(cell)
    return cells


def _area(cell: list[tuple[float, float]]) -> float:
    if len(cell) < 3:
        return 0.0
    xy = np.asarray(cell)
    return float(abs(np.dot(xy[:, 0], np.roll(xy[:, 1], -1)) - np.dot(xy[:, 1], np.roll(xy[:, 0], -1))) / 2)


@functools.cache
def _outlines() -> dict[str, tuple[LatLon, ...]]:
    rows = _rows()
    sites = _to_km(np.array([r.office for r in rows]))
    city = [(float(x), float(y)) for x, y in _to_km(np.array(CITY_OUTLINE))]
    total_area = _area(city)
    targets = np.array([r.area_km2 for r in rows])
    targets *= total_area / targets.sum()
    # Each office stays inside its own cell while |w_i - w_j| < d_ij²: keep a margin.
    limit = 0.8 * ((sites[:, None, :] - sites[None, :, :]) ** 2).sum(axis=2)
    np.fill_diagonal(limit, np.inf)
    weights = np.zeros(len(rows))
    for _ in range(60):  # grow cells that are too small, shrink the others
        areas = np.array([_area(c) for c in _cells(sites, weights, city)])
        weights = _within_limits(weights + 0.2 * (targets - areas), limit)
    cells = _cells(sites, weights, city)
    return {r.district_id: tuple((round(float(lat), 5), round(float(lon), 5))
                                 for lat, lon in _to_latlon(np.asarray(cell)))
            for r, cell in zip(rows, cells, strict=True)}


def _within_limits(weights: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """Pull weights together until no pair differs by more than its limit."""
    for _ in range(50):
        excess = np.maximum(weights[:, None] - weights[None, :] - limit, 0.0)
        if not excess.any():
            break
        weights = weights - 0.5 * excess.max(axis=1) + 0.5 * excess.max(axis=0)
    return weights


def _inside(outline: np.ndarray, lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    inside = np.zeros(lats.shape, dtype=bool)
    for i in range(len(outline)):
        (lat1, lon1), (lat2, lon2) = outline[i - 1], outline[i]
        crosses = (lat1 > lats) != (lat2 > lats)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = (lon2 - lon1) * (lats - lat1) / (lat2 - lat1) + lon1
        inside ^= crosses & (lons < at)
    return inside


def _points_inside(outline: Sequence[LatLon], count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    polygon = np.asarray(outline, dtype=float)
    rng = np.random.default_rng(seed)
    (lat_min, lon_min), (lat_max, lon_max) = polygon.min(axis=0), polygon.max(axis=0)
    lats, lons = np.empty(0), np.empty(0)
    while len(lats) < count:
        n = max(64, 2 * (count - len(lats)))
        la, lo = rng.uniform(lat_min, lat_max, n), rng.uniform(lon_min, lon_max, n)
        keep = _inside(polygon, la, lo)
        lats, lons = np.concatenate((lats, la[keep])), np.concatenate((lons, lo[keep]))
    return lats[:count], lons[:count]
