"""The pilot districts' outlines: plausible shapes that hold every pilot camera, valid GeoJSON
for the core's loader, and a loader that names what is wrong with a bad file."""

from __future__ import annotations

import pytest

from cloud_core.console.district_outlines import parse_district_outlines
from simulators.district_outlines import DISTRICT_OUTLINES, outlines_geojson
from simulators.pilot_districts import PILOT_DISTRICTS, PilotDistrict


@pytest.mark.parametrize("district", PILOT_DISTRICTS, ids=lambda d: d.district_id)
def test_every_pilot_camera_lies_inside_its_district_outline(district: PilotDistrict) -> None:
    outline = DISTRICT_OUTLINES[district.district_id]
    assert 15 <= len(outline) <= 40

    def inside(lat: float, lon: float) -> bool:
        crossings = False
        for (lat1, lon1), (lat2, lon2) in zip(outline, outline[-1:] + outline[:-1], strict=True):
            if (lat1 > lat) == (lat2 > lat):
                continue
            if lon < (lon2 - lon1) * (lat - lat1) / (lat2 - lat1) + lon1:
                crossings = not crossings
        return crossings

    assert [c.camera_id for c in district.cameras if not inside(c.lat, c.lon)] == []
    parsed = {o.district_id: o for o in parse_district_outlines(outlines_geojson())}
    assert parsed[district.district_id].rings[0] == outline



@pytest.mark.parametrize(("document", "problem"), [
    ({"type": "Feature"}, "FeatureCollection"),
    ({"type": "FeatureCollection", "features": [{"properties": {}}]}, "district_id is missing"),
    ({"type": "FeatureCollection", "features": [{"properties": {"district_id": "x"},
      "geometry": {"type": "Point", "coordinates": [127, 37]}}]}, "Polygon or MultiPolygon"),
    ({"type": "FeatureCollection", "features": [{"properties": {"district_id": "x"},
      "geometry": {"type": "Polygon",       # [lat, lon]: the usual mistake
                   "coordinates": [[[37.5, 127.0], [37.6, 127.1], [37.5, 127.2]]]}}]},
     "[lon, lat]"),
])
def test_a_bad_outline_file_is_refused_with_what_is_wrong(document: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        parse_district_outlines(document)
