"""Camera inventories: every bad row reported with its line and reason; nothing imported from a
file that has one; the stored inventory stays exactly as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.camera_inventory import parse_inventory
from safetynet.cli import main
from tests.provisioning.conftest import ProvisionedCity, camera_csv

HEADER = "id,name,lat,lon,stream_url,type"


def _stored(provisioned: ProvisionedCity, district: str) -> dict[str, bytes]:
    """Everything a failed update must leave alone."""
    folder = provisioned.city.district_dir(district)
    bundle = provisioned.bundle(district)
    return {str(p): p.read_bytes() for p in [*folder.rglob("*"), *bundle.rglob("*"),
                                             bundle.with_name(bundle.name + ".tar.gz")]
            if p.is_file()}


def test_bad_coordinate_duplicate_id_and_missing_column_are_all_reported_and_nothing_changes(
        provisioned: ProvisionedCity, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _stored(provisioned, "alpha")
    bad = tmp_path / "bad.csv"
    rows = [
        HEADER,
        "alpha-001,Station exit 1,37.5,127.01,rtsp://10.0.0.1/s1,fixed",      # line 2: fine
        "alpha-002,Market,137.5,127.02,rtsp://10.0.0.2/s1,dome",              # line 3: lat
        "alpha-003,Park gate,37.53,127.03,rtsp://10.0.0.3/s1,ptz",            # line 4: fine
        "alpha-001,Station exit 1 again,37.54,127.04,rtsp://10.0.0.4/s1,fixed",  # 5: duplicate
        "alpha-005,School,37.55,127.05,rtsp://10.0.0.5/s1",                   # line 6: no type
        "",
    ]
    bad.write_text("\n".join(rows))
    code = main(["provision", "district", "add", "alpha", "--name", "Alpha-gu", "--cameras",
                 str(bad), "--update", "--dir", str(provisioned.city.root)])
    err = capsys.readouterr().err
    assert code == 1
    assert "3 problem(s); nothing imported, the stored inventory is unchanged" in err
    problems = [line.strip() for line in err.splitlines()[1:]]
    assert problems == [
        "line 3: bad coordinate: lat 137.5 is out of range -90..90",
        "line 5: duplicate id 'alpha-001' (first on line 2)",
        "line 6: missing column(s) type: the row has 5 values, the header 6",
    ]
    assert _stored(provisioned, "alpha") == before


def test_a_new_district_with_a_bad_inventory_is_not_enrolled(
        provisioned: ProvisionedCity, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "charlie.csv"
    bad.write_text(camera_csv("charlie", extra_rows=(
        "charlie-009,Bridge,37.5,east,rtsp://10.0.0.9/s1,fixed",)))
    acl_before = (provisioned.broker_dir / "acl").read_text()
    assert main(["provision", "district", "add", "charlie", "--name", "Charlie-gu", "--cameras",
                 str(bad), "--dir", str(provisioned.city.root)]) == 1
    assert "line 5: bad coordinate: lon 'east' is not a number" in capsys.readouterr().err
    assert not provisioned.city.district_dir("charlie").exists()
    assert not provisioned.bundle("charlie").exists()
    assert (provisioned.broker_dir / "acl").read_text() == acl_before


def test_camera_ids_are_unique_across_the_city(
        provisioned: ProvisionedCity, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stolen = tmp_path / "charlie.csv"
    stolen.write_text(f"{HEADER}\nbravo-002,Borrowed,37.5,127.0,rtsp://10.0.0.1/x,fixed\n")
    assert main(["provision", "district", "add", "charlie", "--name", "C", "--cameras", str(stolen),
                 "--dir", str(provisioned.city.root)]) == 1
    assert "line 2: duplicate id 'bravo-002': already a camera of district bravo" in \
        capsys.readouterr().err


@pytest.mark.parametrize(("text", "expected"), [
    ("id,name,lat,stream_url,type,latitude\nc1,N,37.5,rtsp://h/x,fixed,1\n",
     ["line 1: missing column(s) lon in the header (required: id,name,lat,lon,stream_url,type)",
      "line 1: unknown column(s) latitude (known: id,name,lat,lon,stream_url,type,address,notes)"]),
    ((f"{HEADER}\nc1,N,37.5,127,http://h/x,fixed\nc2,N,37.5,127,rtsp://admin:s3cret@/x,fixed\n"
      "c3,N,37.5,127,rtsp://h:99999/x,fixed\n"),
     [("line 2: bad URL in stream_url 'http://h/x': use rtsp://HOST[:PORT]/PATH (or rtsps://, "
       "or sim: for a simulated camera)"),
      "line 3: bad URL in stream_url 'rtsp://***@/x': no host",
      ("line 4: bad URL in stream_url 'rtsp://h:99999/x': not a valid URL "
       "(Port out of range 0-65535)")]),
    (f"{HEADER}\nc1,N,37.5,127,rtsp://h/x,Robot\nC 2,,nan,127,rtsp://h/x,ptz\n",
     ["line 2: unknown type 'robot' (use one of: fixed, ptz, dome, bullet, fisheye, thermal)",
      ("line 3: bad id 'C 2': use 1-63 lowercase letters, digits, '.', '_' or '-', starting "
       "with a letter or digit"),
      "line 3: missing value for 'name'",
      "line 3: bad coordinate: lat nan is out of range -90..90"]),
    ("", ["line 1: the file is empty: expected a header row id,name,lat,lon,stream_url,type"]),
    (f"{HEADER}\n", ["line 1: the file lists no cameras"]),
])
def test_each_problem_is_named(text: str, expected: list[str]) -> None:
    report = parse_inventory(text)
    assert [str(p) for p in report.problems] == expected
    assert report.cameras == ()


def test_good_inventory_with_bom_quotes_and_blank_lines() -> None:
    text = ("\ufeffid,type,name,lat,lon,stream_url,notes\n"
            'c1,PTZ,"Exit 11, north side",37.49795,127.0276,rtsp://u:p@10.0.0.1:8554/live,\n'
            "\n"
            'c2,fixed,"Two\nlines",37.5,127.1,sim:?fps=5,spare\n'
            "c3,dome,Last,-33.9,151.2,rtsps://cam.example/x,\n")
    report = parse_inventory(text)
    assert report.ok, report.problems
    assert [c.camera_id for c in report.cameras] == ["c1", "c2", "c3"]
    assert report.cameras[0].camera_type == "ptz" and report.cameras[0].name == "Exit 11, north side"
    assert "p@10.0.0.1" not in repr(report.cameras[0])
    # Line numbers follow the file, also after a quoted field spanning two lines.
    broken = parse_inventory(text.replace("Last", "Last,extra"))
    assert {p.line for p in broken.problems} == {6}


def test_agent_config_reads_cameras_from_the_inventory_file(tmp_path: Path) -> None:
    from edge_agent.config import AgentConfig
    from edge_agent.exceptions import ConfigError

    config = tmp_path / "agent.toml"
    inventory = tmp_path / "cameras.csv"
    inventory.write_text(camera_csv("delta", count=2))
    base = '[district]\nid = "delta"\n[core]\naddress = "core.example:50051"\nca_file = "ca.crt"\n'
    config.write_text('cameras_file = "cameras.csv"\n' + base)
    loaded = AgentConfig.from_toml(config)
    assert [c.camera_id for c in loaded.cameras] == ["delta-001", "delta-002"]
    assert loaded.core_address == "core.example:50051" and loaded.core_ca_file == tmp_path / "ca.crt"

    inventory.write_text(camera_csv("delta", extra_rows=("delta-009,X,95,127,sim:,fixed",)))
    with pytest.raises(ConfigError, match=r"line 5: bad coordinate: lat 95 is out of range"):
        AgentConfig.from_toml(config)
    config.write_text('cameras_file = "cameras.csv"\n' + base.replace("[core]", "[[cameras]]\n"
                      'id = "x"\nlat = 1\nlon = 1\nsource = "sim:"\n[core]'))
    with pytest.raises(ConfigError, match=r"inline .* or as cameras_file, not both"):
        AgentConfig.from_toml(config)
