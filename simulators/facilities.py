"""Parking and hazardous facilities near the pilot districts, for 119 incident responses.

A real deployment imports these from the city's facility registers; the pilot uses this list.
CSV columns: facility_id, kind (parking | hazardous), name, lat, lon, detail.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FacilityRecord:
    facility_id: str
    kind: str
    name: str
    lat: float
    lon: float
    detail: str


PILOT_FACILITIES: tuple[FacilityRecord, ...] = (
    FacilityRecord("pk-gn-01", "parking", "Gangnam Station public parking", 37.49862, 127.02662, "312 spaces"),
    FacilityRecord("pk-gn-02", "parking", "Yeoksam-dong public parking", 37.50122, 127.03791, "140 spaces"),
    FacilityRecord("pk-gn-03", "parking", "COEX underground parking", 37.51153, 127.05960, "2,600 spaces"),
    FacilityRecord("pk-gn-04", "parking", "Gangnam-gu Office parking", 37.51750, 127.04760, "220 spaces"),
    FacilityRecord("pk-gn-05", "parking", "Daechi-dong public parking", 37.49530, 127.06210, "96 spaces"),
    FacilityRecord("hz-gn-01", "hazardous", "Nonhyeon filling station", 37.50990, 127.02330, "petrol, diesel; 60,000 L"),
    FacilityRecord("hz-gn-02", "hazardous", "Yeoksam LPG station", 37.49910, 127.04120, "LPG; 20 t"),
    FacilityRecord("hz-gn-03", "hazardous", "Samseong substation", 37.50760, 127.05610, "154 kV transformer"),
    FacilityRecord("hz-gn-04", "hazardous", "Suseo rail depot fuel store", 37.48620, 127.10050, "diesel; 200,000 L"),
    FacilityRecord("pk-mp-01", "parking", "Hongdae public parking", 37.55640, 126.92300, "180 spaces"),
    FacilityRecord("pk-mp-02", "parking", "Hapjeong Station parking", 37.54930, 126.91500, "250 spaces"),
    FacilityRecord("pk-mp-03", "parking", "World Cup Stadium parking", 37.56700, 126.89600, "2,000 spaces"),
    FacilityRecord("pk-mp-04", "parking", "Gongdeok public parking", 37.54380, 126.95050, "120 spaces"),
    FacilityRecord("hz-mp-01", "hazardous", "Mangwon filling station", 37.55520, 126.90720, "petrol, diesel; 45,000 L"),
    FacilityRecord("hz-mp-02", "hazardous", "Sangam district heating plant", 37.57520, 126.88480, "natural gas boilers"),
    FacilityRecord("hz-mp-03", "hazardous", "Mapo resource recovery facility", 37.56380, 126.87960, "incinerator, chemical storage"),
    FacilityRecord("hz-mp-04", "hazardous", "Ahyeon LPG station", 37.55620, 126.95410, "LPG; 15 t"),
)


def write_facilities_csv(path: Path, facilities: tuple[FacilityRecord, ...] = PILOT_FACILITIES) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["facility_id", "kind", "name", "lat", "lon", "detail"])
        for f in facilities:
            writer.writerow([f.facility_id, f.kind, f.name, f.lat, f.lon, f.detail])
    return path
