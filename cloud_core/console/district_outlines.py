"""District outlines for the console's map, read from a GeoJSON file.

The file is a FeatureCollection of Polygon or MultiPolygon features whose properties carry
``district_id`` (and optionally ``name``); positions are [lon, lat] as GeoJSON has them. The
pilot's file is written by ``simulators.district_outlines``; a city uses its boundary data.
A bad file is refused at startup with a ConfigError naming the feature and what is wrong.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud_core.exceptions import ConfigError

LatLon = tuple[float, float]


@dataclass(frozen=True)
class DistrictOutline:
    district_id: str
    name: str
    rings: tuple[tuple[LatLon, ...], ...]   # outer rings, (lat, lon)

    def as_json(self) -> list[list[list[float]]]:
        return [[[lat, lon] for lat, lon in ring] for ring in self.rings]


def load_district_outlines(path: Path) -> tuple[DistrictOutline, ...]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read district outlines: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(str(path), f"district outlines are not JSON: {exc}") from exc
    try:
        return parse_district_outlines(document)
    except ValueError as exc:
        raise ConfigError(str(path), str(exc)) from exc


def parse_district_outlines(document: Any) -> tuple[DistrictOutline, ...]:
    """Outlines from a GeoJSON FeatureCollection; ValueError naming the first problem."""
    if not isinstance(document, dict) or document.get("type") != "FeatureCollection":
        raise ValueError("district outlines must be a GeoJSON FeatureCollection")
    features = document.get("features")
    if not isinstance(features, list):
        raise ValueError("the FeatureCollection has no features list")
    outlines = []
    seen: set[str] = set()
    for number, feature in enumerate(features, start=1):
        where = f"feature {number}"
        properties = feature.get("properties") if isinstance(feature, dict) else None
        district_id = properties.get("district_id") if isinstance(properties, dict) else None
        if not isinstance(district_id, str) or not district_id:
            raise ValueError(f"{where}: properties.district_id is missing")
        where = f"feature {number} ({district_id})"
        if district_id in seen:
            raise ValueError(f"{where}: district {district_id!r} is outlined twice")
        seen.add(district_id)
        name = properties.get("name", district_id)  # type: ignore[union-attr]
        geometry = feature.get("geometry") or {}
        kind, coordinates = geometry.get("type"), geometry.get("coordinates")
        if kind == "Polygon":
            polygons = [coordinates]
        elif kind == "MultiPolygon" and isinstance(coordinates, list):
            polygons = coordinates
        else:
            raise ValueError(f"{where}: geometry must be a Polygon or MultiPolygon, not {kind!r}")
        rings = tuple(_ring(polygon, where) for polygon in polygons)
        outlines.append(DistrictOutline(district_id, str(name), rings))
    return tuple(outlines)


def _ring(polygon: Any, where: str) -> tuple[LatLon, ...]:
    if not isinstance(polygon, list) or not polygon or not isinstance(polygon[0], list):
        raise ValueError(f"{where}: a polygon needs at least its outer ring")
    ring = []
    for position in polygon[0]:
        if (not isinstance(position, list) or len(position) < 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool)
                           for v in position[:2])):
            raise ValueError(f"{where}: positions must be [lon, lat] numbers, got {position!r}")
        lon, lat = float(position[0]), float(position[1])
        if not (math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
            raise ValueError(f"{where}: [{lon}, {lat}] is not a place on Earth "
                             "(GeoJSON positions are [lon, lat])")
        ring.append((lat, lon))
    if len(ring) > 1 and ring[0] == ring[-1]:
        ring.pop()
    if len(ring) < 3:
        raise ValueError(f"{where}: an outline needs at least 3 vertices")
    return tuple(ring)
