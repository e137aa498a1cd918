"""A district's camera inventory as a CSV file: the format, and its validation.

The file is UTF-8 (a byte-order mark, as spreadsheets write it, is fine), comma-separated, with a
header row naming its columns in any order:

    id,name,lat,lon,stream_url,type,address,notes
    gangnam-001,Gangnam Station exit 11,37.49795,127.02760,rtsp://10.20.0.11:554/stream1,fixed,,
    gangnam-002,Sinsa Station crossing,37.51638,127.02012,rtsp://user:pw@10.20.0.12/h264,ptz,,

| column | required | what |
| --- | --- | --- |
| ``id`` | yes | camera id: 1-63 of ``a-z 0-9 . _ -``, unique in the city |
| ``name`` | yes | what an operator sees, e.g. the place |
| ``lat``, ``lon`` | yes | WGS84 decimal degrees (lat -90..90, lon -180..180) |
| ``stream_url`` | yes | ``rtsp://`` or ``rtsps://`` with a host (credentials allowed, never shown), or ``sim:`` for a simulated camera |
| ``type`` | yes | one of ``CAMERA_TYPES`` (case-insensitive) |
| ``address`` | no | street address, free text |
| ``notes`` | no | free text |

Blank lines are skipped. Validation reports every problem with its line number; a caller imports
nothing from a file with any problem. Stream URLs may carry credentials: they never appear in a
problem, a log line or a repr.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from protos.topics import ID_PATTERN

REQUIRED_COLUMNS = ("id", "name", "lat", "lon", "stream_url", "type")
OPTIONAL_COLUMNS = ("address", "notes")
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
CAMERA_TYPES = ("fixed", "ptz", "dome", "bullet", "fisheye", "thermal")
STREAM_SCHEMES = ("rtsp", "rtsps")
MAX_NAME = 200

#: Called with the number of rows read so far (every ``PROGRESS_EVERY`` rows and at the end).
Progress = Callable[[int], None]
PROGRESS_EVERY = 500


@dataclass(frozen=True)
class InventoryCamera:
    camera_id: str
    name: str
    lat: float
    lon: float
    stream_url: str = field(repr=False)  # may carry credentials
    camera_type: str
    address: str = ""
    notes: str = ""


@dataclass(frozen=True)
class InventoryProblem:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class InventoryReport:
    """What a file holds: its cameras if ``ok``, else every problem found (and no cameras)."""

    cameras: tuple[InventoryCamera, ...]
    problems: tuple[InventoryProblem, ...]
    rows: int

    @property
    def ok(self) -> bool:
        return not self.problems


def read_inventory(path: Path, *, taken_ids: Mapping[str, str] | None = None,
                   progress: Progress | None = None) -> InventoryReport:
    """Read and validate ``path``; ``taken_ids`` maps ids used elsewhere to their district."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        return _failed(1, f"file not found: {path}")
    except IsADirectoryError:
        return _failed(1, f"{path} is a folder, not a CSV file")
    except UnicodeDecodeError as exc:
        return _failed(_line_of(exc), "not UTF-8 text: save the sheet as 'CSV UTF-8'")
    return parse_inventory(text, taken_ids=taken_ids, progress=progress)


def parse_inventory(text: str, *, taken_ids: Mapping[str, str] | None = None,
                    progress: Progress | None = None) -> InventoryReport:
    """Validate CSV ``text``: every problem of every row, with line numbers."""
    taken = taken_ids or {}
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    problems: list[InventoryProblem] = []
    cameras: list[InventoryCamera] = []
    first_line: dict[str, int] = {}
    rows = 0
    try:
        header = next((row for row in reader if row), None)
        if header is None:
            return _failed(1, f"the file is empty: expected a header row {','.join(REQUIRED_COLUMNS)}")
        header_line = reader.line_num
        columns = [c.strip().lower() for c in header]
        problems += _header_problems(columns, header_line)
        index = {name: i for i, name in enumerate(columns) if name in COLUMNS}
        line = reader.line_num + 1
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                line = reader.line_num + 1
                continue
            rows += 1
            camera, row_problems = _camera(row, line, columns, index, first_line, taken)
            problems += row_problems
            if camera is not None:
                cameras.append(camera)
            if progress is not None and rows % PROGRESS_EVERY == 0:
                progress(rows)
            line = reader.line_num + 1
    except csv.Error as exc:
        problems.append(InventoryProblem(reader.line_num, f"not valid CSV: {exc}"))
    if progress is not None:
        progress(rows)
    if rows == 0 and not problems:
        problems.append(InventoryProblem(1, "the file lists no cameras"))
    if problems:
        return InventoryReport((), tuple(problems), rows)
    return InventoryReport(tuple(cameras), (), rows)


def inventory_csv(cameras: Iterable[InventoryCamera]) -> str:
    """The canonical CSV of ``cameras`` (what provisioning stores and puts in a bundle)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for c in cameras:
        writer.writerow([c.camera_id, c.name, repr(c.lat), repr(c.lon), c.stream_url,
                         c.camera_type, c.address, c.notes])
    return out.getvalue()


def redacted_url(url: str) -> str:
    """``url`` without user name and password, for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    return f"{scheme}://{authority}{slash}{path}"


def _failed(line: int, reason: str) -> InventoryReport:
    return InventoryReport((), (InventoryProblem(line, reason),), 0)


def _line_of(exc: UnicodeDecodeError) -> int:
    return exc.object[:exc.start].count(b"\n") + 1


def _header_problems(columns: list[str], line: int) -> list[InventoryProblem]:
    problems = []
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        problems.append(InventoryProblem(
            line, f"missing column(s) {', '.join(missing)} in the header "
                  f"(required: {','.join(REQUIRED_COLUMNS)})"))
    unknown = [c or "(empty)" for c in columns if c not in COLUMNS]
    if unknown:
        problems.append(InventoryProblem(
            line, f"unknown column(s) {', '.join(unknown)} (known: {','.join(COLUMNS)})"))
    repeated = sorted({c for c in columns if c and columns.count(c) > 1})
    if repeated:
        problems.append(InventoryProblem(line, f"column(s) {', '.join(repeated)} appear twice"))
    return problems


def _camera(row: list[str], line: int, columns: list[str], index: Mapping[str, int],
            first_line: dict[str, int], taken: Mapping[str, str],
            ) -> tuple[InventoryCamera | None, list[InventoryProblem]]:
    problems: list[str] = []
    if len(row) > len(columns):
        problems.append(f"{len(row)} values but the header has {len(columns)} columns "
                        "(an unquoted comma in a name?)")
    short = [c for c in REQUIRED_COLUMNS if index.get(c, -1) >= len(row)]
    if short:
        problems.append(f"missing column(s) {', '.join(short)}: the row has {len(row)} values, "
                        f"the header {len(columns)}")

    def value(column: str) -> str | None:
        """The cell, or None (with a problem) when the column or its value is missing."""
        position = index.get(column)
        if position is None:
            return None  # reported once, on the header line
        if position >= len(row):
            return None if column in REQUIRED_COLUMNS else ""  # reported above
        cell = row[position].strip()
        if not cell and column in REQUIRED_COLUMNS:
            problems.append(f"missing value for {column!r}")
            return None
        return cell

    camera_id = value("id")
    if camera_id is not None:
        if not ID_PATTERN.fullmatch(camera_id):
            problems.append(f"bad id {camera_id!r}: use 1-63 lowercase letters, digits, '.', '_' "
                            "or '-', starting with a letter or digit")
        elif camera_id in first_line:
            problems.append(f"duplicate id {camera_id!r} (first on line {first_line[camera_id]})")
        elif camera_id in taken:
            problems.append(f"duplicate id {camera_id!r}: already a camera of district "
                            f"{taken[camera_id]}")
        else:
            first_line[camera_id] = line
    name = value("name")
    if name is not None and len(name) > MAX_NAME:
        problems.append(f"name is {len(name)} characters long, at most {MAX_NAME}")
    lat = _coordinate(value("lat"), "lat", 90.0, problems)
    lon = _coordinate(value("lon"), "lon", 180.0, problems)
    stream_url = value("stream_url")
    if stream_url is not None:
        url_problem = stream_url_problem(stream_url)
        if url_problem:
            problems.append(f"bad URL in stream_url {redacted_url(stream_url)!r}: {url_problem}")
    camera_type = value("type")
    if camera_type is not None:
        camera_type = camera_type.lower()
        if camera_type not in CAMERA_TYPES:
            problems.append(f"unknown type {camera_type!r} (use one of: {', '.join(CAMERA_TYPES)})")
    address, notes = value("address") or "", value("notes") or ""
    reported = [InventoryProblem(line, p) for p in problems]
    if reported or None in (camera_id, name, lat, lon, stream_url, camera_type):
        return None, reported
    assert camera_id and name and lat is not None and lon is not None
    assert stream_url and camera_type
    return InventoryCamera(camera_id, name, lat, lon, stream_url, camera_type, address, notes), []


def _coordinate(cell: str | None, what: str, bound: float, problems: list[str]) -> float | None:
    if cell is None:
        return None
    try:
        number = float(cell)
    except ValueError:
        problems.append(f"bad coordinate: {what} {cell!r} is not a number")
        return None
    if not math.isfinite(number) or abs(number) > bound:
        problems.append(f"bad coordinate: {what} {cell} is out of range -{bound:g}..{bound:g}")
        return None
    return number


def stream_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a camera's stream, or None."""
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        return "contains spaces or control characters"
    if url.startswith("sim:"):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme not in STREAM_SCHEMES:
        return "use rtsp://HOST[:PORT]/PATH (or rtsps://, or sim: for a simulated camera)"
    if not parts.hostname:
        return "no host"
    if port == 0:
        return "port 0"
    return None
