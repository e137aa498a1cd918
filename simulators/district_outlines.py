"""Approximate outlines of the pilot districts, for the console's map.

Hand-traced from the districts' real boundaries, about 25 vertices each (lat, lon; WGS84,
clockwise from the north-west): Gangnam-gu between the Han River (north), Tancheon (east),
Daemosan and Guryongsan (south) and Gangnam-daero / Seocho-gu (west); Mapo-gu between
Eunpyeong-gu and Seodaemun-gu (north, east), Yongsan-gu (south-east) and the Han River (south).
Good enough to draw a map and to place every pilot camera inside its district; not a survey.

A real deployment loads the city's boundary file instead. The core reads outlines as GeoJSON
(``district_outlines`` in its config); ``write_outlines_geojson`` writes this module's.
"""

from __future__ import annotations

import json
from pathlib import Path

from simulators.pilot_districts import PILOT_DISTRICTS

LatLon = tuple[float, float]

GANGNAM_OUTLINE: tuple[LatLon, ...] = (
    (37.5262, 127.0168),   # Hannam Bridge, south end
    (37.5312, 127.0242),   # Han River bank, Sinsa
    (37.5303, 127.0334),
    (37.5288, 127.0423),   # Apgujeong
    (37.5268, 127.0511),
    (37.5242, 127.0582),   # Cheongdam Bridge
    (37.5196, 127.0658),
    (37.5168, 127.0696),   # Tancheon meets the Han
    (37.5095, 127.0707),   # Tancheon, Samseong
    (37.5012, 127.0728),
    (37.4941, 127.0781),   # Daechi / Suseo interchange
    (37.4905, 127.0880),
    (37.4902, 127.0990),
    (37.4880, 127.1068),   # Tancheon, east of Suseo
    (37.4800, 127.1118),
    (37.4665, 127.1168),   # Segok, east edge
    (37.4583, 127.1122),
    (37.4560, 127.1028),   # Inneung-san foothills
    (37.4594, 127.0912),
    (37.4638, 127.0808),   # Daemosan, south
    (37.4672, 127.0694),   # Guryongsan
    (37.4708, 127.0576),
    (37.4764, 127.0486),   # Yangjae-cheon
    (37.4832, 127.0419),
    (37.4903, 127.0352),
    (37.4963, 127.0270),   # Gangnam-daero, Gangnam Station
    (37.5043, 127.0244),
    (37.5110, 127.0203),   # Nonhyeon
    (37.5166, 127.0186),   # Sinsa
    (37.5222, 127.0170),
)

MAPO_OUTLINE: tuple[LatLon, ...] = (
    (37.5852, 126.8804),   # Sangam, north-west corner (Goyang border)
    (37.5846, 126.8947),
    (37.5808, 126.9048),   # Susaek
    (37.5736, 126.9121),
    (37.5702, 126.9219),   # Yeonhui border
    (37.5644, 126.9298),   # Yeonnam / Sinchon
    (37.5603, 126.9376),   # Sinchon
    (37.5590, 126.9448),
    (37.5601, 126.9529),   # Ahyeon, north
    (37.5572, 126.9601),   # Aeogae
    (37.5502, 126.9622),   # Gongdeok, east
    (37.5431, 126.9612),
    (37.5370, 126.9571),   # Wonhyo-ro, Yongsan border
    (37.5349, 126.9512),
    (37.5341, 126.9431),   # Mapo Bridge
    (37.5377, 126.9302),   # Seogang Bridge
    (37.5432, 126.9181),   # Dangin-ri
    (37.5481, 126.9032),   # Yanghwa Bridge
    (37.5531, 126.8921),   # Mangwon Hangang Park
    (37.5558, 126.8876),   # Seongsan Bridge
    (37.5611, 126.8797),   # Nanji Hangang Park
    (37.5698, 126.8683),   # Gayang Bridge
    (37.5762, 126.8629),
    (37.5820, 126.8692),   # Nanji-cheon, Goyang border
    (37.5868, 126.8751),
)

DISTRICT_OUTLINES: dict[str, tuple[LatLon, ...]] = {
    "gangnam": GANGNAM_OUTLINE,
    "mapo": MAPO_OUTLINE,
}


def outlines_geojson() -> dict[str, object]:
    """The pilot outlines as a GeoJSON FeatureCollection (lon, lat order; closed rings)."""
    names = {d.district_id: d.name for d in PILOT_DISTRICTS}
    features = []
    for district_id, outline in DISTRICT_OUTLINES.items():
        ring = [[lon, lat] for lat, lon in outline]
        ring.append(ring[0])
        features.append({
            "type": "Feature",
            "properties": {"district_id": district_id, "name": names[district_id]},
            "geometry": {"type": "Polygon", "coordinates": [ring]},
        })
    return {"type": "FeatureCollection", "features": features}


def write_outlines_geojson(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(outlines_geojson(), indent=1) + "\n", encoding="utf-8")
    return path
