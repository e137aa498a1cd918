"""Camera inventory CSVs (``runtime/camera_inventory.py``), fuzzed: valid sheets with cells,
rows and quoting mangled, random text, and bytes that are not UTF-8.

Reading never raises: a file is either ``ok`` with cameras that survive a round trip through
the canonical CSV, or rejected with problems that each name a line and what is wrong (and no
cameras). Through provisioning, a rejected inventory changes nothing stored for the district.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioning.city import City, init_city
from provisioning.district_enrolment import add_district
from provisioning.exceptions import InventoryRejected
from runtime.camera_inventory import (
    CAMERA_TYPES,
    MAX_NAME,
    InventoryReport,
    inventory_csv,
    parse_inventory,
    read_inventory,
)
from tests.fuzz.harness import NASTY_TEXT, counted, fuzz_settings, mutated_lines

VALID = (
    "id,name,lat,lon,stream_url,type,address,notes\n"
    "cam-001,Station exit 11,37.49795,127.02760,rtsp://viewer:pw@10.0.0.1:554/s1,fixed,,\n"
    'cam-002,"Crossing, north",37.5,127.03,rtsps://10.0.0.2/live,ptz,"12 Main St",night IR\n'
    "cam-003,Park gate,-33.9,151.2,sim:?size=320x240,dome,,\n"
)
SEEDS = (VALID, VALID.replace(",address,notes", "").replace(",,\n", "\n"),
         "\ufeff" + VALID.replace("\n", "\r\n"), VALID.upper())
CELLS = st.one_of(NASTY_TEXT, st.sampled_from(
    ["91", "-180.0000001", "1e3", "0x10", "37,5", '"quoted, comma"', '"unterminated', "\"\"\"",
     "rtsp://", "rtsp://h:0/x", "rtsp://h:99999/x", "rtsp://[::1/x", "http://h/x", "sim:", "PTZ",
     "thermal ", "cam-001", "CAM-9", "a" * 64, "x" * (MAX_NAME + 1), "a\nb", "a\rb"]))


def inventories() -> st.SearchStrategy[str]:
    return st.one_of(mutated_lines(SEEDS, CELLS), st.text(max_size=300),
                     st.lists(st.lists(CELLS, max_size=9).map(",".join), max_size=6)
                     .map(lambda rows: "\n".join(["id,name,lat,lon,stream_url,type", *rows])))


def check_report(report: InventoryReport, text: str) -> None:
    if report.ok:
        assert report.cameras and report.rows == len(report.cameras)
        ids = [c.camera_id for c in report.cameras]
        assert len(set(ids)) == len(ids)
        for camera in report.cameras:
            assert math.isfinite(camera.lat) and abs(camera.lat) <= 90
            assert math.isfinite(camera.lon) and abs(camera.lon) <= 180
            assert camera.camera_type in CAMERA_TYPES and len(camera.name) <= MAX_NAME
        again = parse_inventory(inventory_csv(report.cameras))
        assert again.ok and again.cameras == report.cameras, again.problems
        return
    assert report.cameras == ()
    lines = text.count("\n") + text.count("\r") + 2
    for problem in report.problems:
        assert 1 <= problem.line <= lines, problem
        assert problem.reason.strip(), problem


def check_inventory_text(text: str) -> None:
    counted("csv_inventory")
    check_report(parse_inventory(text), text)


def check_inventory_bytes(folder: Path, data: bytes) -> None:
    counted("csv_inventory_bytes")
    path = folder / "cameras.csv"
    path.write_bytes(data)
    report = read_inventory(path)
    if report.ok:
        check_report(report, data.decode("utf-8-sig"))
    else:
        assert report.cameras == () and all(p.reason.strip() for p in report.problems)


@fuzz_settings(500)
@given(inventories())
def test_any_inventory_text_is_read_or_rejected_with_lines(text: str) -> None:
    check_inventory_text(text)


@fuzz_settings(100)
@given(st.one_of(st.binary(max_size=300),
                 st.sampled_from(SEEDS).map(lambda s: s.encode() + b"\xff\xfe\x80"),
                 st.sampled_from(SEEDS).map(lambda s: s.encode("utf-16"))))
def test_any_inventory_bytes_are_read_or_rejected(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        check_inventory_bytes(Path(folder), data)


# --- through provisioning: a rejected inventory changes nothing stored -----------------------------

def enrolled_city(root: Path) -> City:
    """A city in ``root`` with district alpha enrolled from a good inventory."""
    city = init_city(root / "city", city_name="Fuzzville", broker=("127.0.0.1", 1883),
                     core=("127.0.0.1", 50051))
    (root / "good.csv").write_text(VALID)
    add_district(city, "alpha", name="Alpha-gu", cameras_csv=root / "good.csv")
    return city


@pytest.fixture(scope="module")
def city() -> Iterator[City]:
    with tempfile.TemporaryDirectory(prefix="safetynet-fuzz-city-") as folder:
        yield enrolled_city(Path(folder))


def _stored(city: City) -> tuple[bytes, object]:
    return (city.district_dir("alpha") / "cameras.csv").read_bytes(), city.district("alpha")


def check_enrolment(city: City, text: str) -> None:
    counted("csv_enrolment")
    if parse_inventory(text).ok:
        return  # a good inventory may replace the stored one; that is the point of --update
    before = _stored(city)
    upload = city.district_dir("alpha").parent / "upload.csv"
    upload.write_text(text, encoding="utf-8")
    with pytest.raises(InventoryRejected) as rejected:
        add_district(city, "alpha", name="Alpha-gu", cameras_csv=upload, update=True)
    assert rejected.value.problems and "nothing imported" in str(rejected.value)
    assert _stored(city) == before


@fuzz_settings(40)
@given(inventories())
def test_a_rejected_inventory_changes_nothing_stored(city: City, text: str) -> None:
    check_enrolment(city, text)
