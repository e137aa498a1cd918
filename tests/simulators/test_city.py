"""The simulated city: 25 districts, 68,000 cameras in proportion, each inside its district."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulators import city
from simulators.rtsp_launcher import SimCamerasConfig, write_inventory

SEOUL = ["jongno", "jung", "yongsan", "seongdong", "gwangjin", "dongdaemun", "jungnang", "seongbuk", "gangbuk", "dobong", "nowon", "eunpyeong", "seodaemun", "mapo", "yangcheon", "gangseo", "guro", "geumcheon", "yeongdeungpo", "dongjak", "gwanak", "seocho", "gangnam", "songpa", "gangdong"]


def test_the_city_has_its_25_districts_by_their_real_ids() -> None:
    districts = city.districts()
    assert [d.district_id for d in districts] == SEOUL
    assert {d.name for d in districts} >= {"Gangnam-gu", "Mapo-gu", "Jongno-gu"}


def test_68000_cameras_shared_in_proportion_gangnam_largest() -> None:
    districts = city.districts()
    total = sum(d.camera_count for d in districts)
    assert abs(total - 68_000) <= 680
    largest = max(districts, key=lambda d: d.camera_count)
    assert largest.district_id == "gangnam"
    import csv

    with city.DATA_FILE.open(encoding="utf-8") as handle:
        published = {row["district_id"]: int(row["cctv_at_68000"]) for row in csv.DictReader(handle)}
    assert {d.district_id: d.camera_count for d in districts} == published


@pytest.mark.parametrize("total", [25, 1_000, 2_721])
def test_any_total_is_apportioned_exactly(total: int) -> None:
    assert sum(d.camera_count for d in city.districts(total)) == total


def test_every_camera_lies_inside_its_districts_outline() -> None:
    cameras = city.city_cameras()
    assert len(cameras) == sum(d.camera_count for d in city.districts())
    assert len({c.camera_id for c in cameras}) == len(cameras)
    outlines = {d.district_id: d.outline for d in city.districts()}
    misplaced = [c.camera_id for c in cameras if not city.contains(outlines[c.district_id], c.lat, c.lon)]
    assert misplaced == []


def test_outlines_are_plausible_each_office_inside_areas_near_the_real_ones() -> None:
    districts = city.districts()
    for district in districts:
        assert city.contains(district.outline, *district.office), district.district_id
        assert city.polygon_area_km2(district.outline) == pytest.approx(district.area_km2, rel=0.35)
    assert sum(city.polygon_area_km2(d.outline) for d in districts) == pytest.approx(605, rel=0.05)
    # Outlines do not overlap: a district's cameras are in no other outline.
    for district in districts[::6]:
        sample = city.district_cameras(district)[::50]
        for other in districts:
            if other is not district:
                assert not any(city.contains(other.outline, c.lat, c.lon) for c in sample)


def test_the_city_is_deterministic() -> None:
    gangnam = next(d for d in city.districts() if d.district_id == "gangnam")
    assert city.district_cameras(gangnam)[:5] == city.district_cameras(gangnam)[:5]
    first = city.district_cameras(gangnam)[0]
    assert first.camera_id == "gangnam-0001" and first.district_id == "gangnam"


def test_outlines_geojson_has_every_district(tmp_path: Path) -> None:
    path = city.write_outlines_geojson(tmp_path / "outlines.geojson")
    features = json.loads(path.read_text())["features"]
    assert [f["properties"]["district_id"] for f in features] == SEOUL
    ring = features[0]["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1]


def test_sim_cameras_count_places_cameras_in_districts(tmp_path: Path) -> None:
    config = SimCamerasConfig.from_args(["--count", "30", "--inventory", str(tmp_path / "inv.csv")])
    assert len(config.camera_ids) == 30
    assert {p.camera_id for p in config.places} == set(config.camera_ids)
    assert any(cid.startswith("gangnam-") for cid in config.camera_ids)
    urls = {cid: f"rtsp://127.0.0.1:8554/cam/{cid}" for cid in config.camera_ids}
    places = {p.camera_id: p for p in config.places}
    inventory = write_inventory(tmp_path / "inv.csv", urls, places)
    from runtime.camera_inventory import read_inventory

    report = read_inventory(inventory)
    assert report.ok and len(report.cameras) == 30
    assert {round(c.lat, 6) for c in report.cameras} == {p.lat for p in config.places}
