"""Getting the audit log out: CSV or JSON exports for the monthly review, and a file snapshot.

Callers record an export itself with an ``audit.export`` entry: only they know who asked.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Final, Literal, TextIO

from cloud_core.audit.schema import RECORD_COLUMNS, payload_from_row
from cloud_core.audit.store import open_readonly
from cloud_core.exceptions import AuditError
from cloud_core.storage.base import (
    Location,
    RecordFilter,
    Row,
    is_postgres,
    open_audit_reader,
    time_bounds,
)

ExportFormat = Literal["csv", "json"]


def export(
    db_path: Location,
    since: datetime | None = None,
    until: datetime | None = None,
    fmt: ExportFormat = "csv",
) -> str:
    """The records written in [since, until) as CSV or JSON text (the monthly review).

    Callers record the export itself with an ``audit.export`` entry: only they know who asked.
    """
    out = io.StringIO(newline="")
    write_export(db_path, out, since=since, until=until, fmt=fmt)
    return out.getvalue()


def write_export(
    db_path: Location,
    out: TextIO,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    fmt: ExportFormat = "csv",
) -> int:
    """Stream the export of ``export`` into ``out``; return the number of records.

    CSV: a header row of the column names, one row per record, ``camera_ids`` joined with ``;``,
    ``details`` as JSON, absent values empty. A cell that would start with ``= + - @``, a tab or
    a carriage return is prefixed with ``'`` (``csv_safe``), so no spreadsheet runs it. JSON: a list of objects, each the
    record's canonical payload plus ``hash``. Rows are exported as stored, even if tampered
    with: run ``verify`` to judge them.
    """
    if fmt not in ("csv", "json"):
        raise ValueError(f"unknown export format {fmt!r}; expected 'csv' or 'json'")
    start, end = time_bounds(since, until)
    with open_audit_reader(db_path) as reader:
        rows = reader.records(RecordFilter(since=start, until=end))
        return _write_csv(rows, out) if fmt == "csv" else _write_json(rows, out)


def count_records(content: str, fmt: str) -> int:
    """How many records the export text ``content`` (format ``fmt``) holds.

    The export's reply and its own ``audit.export`` record both report this number.
    """
    if fmt == "json":
        return len(json.loads(content))
    # csv's default field limit (128 KiB) would fail on a long (old, pre-limit) record: raise it.
    csv.field_size_limit(max(csv.field_size_limit(), len(content) + 1))
    return max(0, sum(1 for _ in csv.reader(io.StringIO(content))) - 1)


def snapshot(db_path: Location, dest: Path) -> int:
    """Copy the log's file to ``dest`` consistently while the core writes it (SQLite backup).

    A plain file copy misses what is still in the ``-wal`` file; this copy holds everything
    committed when it ran, WAL included, in one file (rollback-journal mode, so ``verify``
    accepts it alone), created 0600. ``dest`` must not exist. Returns the records copied.
    On PostgreSQL use ``pg_dump``.
    """
    if is_postgres(db_path):
        raise AuditError("snapshot copies a SQLite file; on PostgreSQL use pg_dump")
    dest = Path(dest)
    try:
        os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        raise AuditError(f"{dest} already exists") from None
    except OSError as exc:
        raise AuditError(f"cannot create {dest}: {exc}") from exc
    try:
        with open_readonly(Path(db_path)) as source:
            source.execute("COMMIT")
            target = sqlite3.connect(dest, isolation_level=None)
            try:
                source.backup(target)
                target.execute("PRAGMA journal_mode=DELETE")
                return int(target.execute("SELECT count(*) FROM audit_records").fetchone()[0])
            finally:
                target.close()
    except (sqlite3.Error, AuditError) as exc:
        dest.unlink(missing_ok=True)
        raise AuditError(f"cannot copy the audit log to {dest}: {exc}") from exc


def _write_csv(rows: Iterable[Row], out: TextIO) -> int:
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(RECORD_COLUMNS)
    count = 0
    for row in rows:
        writer.writerow(_csv_cells(row))
        count += 1
    return count


def _write_json(rows: Iterable[Row], out: TextIO) -> int:
    count = 0
    out.write("[")
    for row in rows:
        try:
            item = {**payload_from_row(row), "hash": row["hash"]}
        except ValueError:
            item = dict(row)
        out.write(",\n" if count else "\n")
        out.write(json.dumps(item, sort_keys=True, ensure_ascii=False))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


#: A spreadsheet reads a cell starting with one of these as a formula (OWASP, CSV injection).
FORMULA_LEADS: Final = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(text: str) -> str:
    """``text`` as a CSV cell no spreadsheet runs: a formula-leading cell gets a leading ``'``.

    OWASP's guidance for CSV injection: prefix such cells with a single quote (and quote the
    cell, which the csv module does when needed). A reviewer strips the quote to recompute a
    hash; the JSON export carries every value verbatim.
    """
    return f"'{text}" if text.startswith(FORMULA_LEADS) else text


def _csv_cells(row: Row) -> list[str]:
    cells: list[str] = []
    for column in RECORD_COLUMNS:
        value = row[column]
        if column == "camera_ids":
            with contextlib.suppress(TypeError, ValueError):
                value = ";".join(str(camera) for camera in json.loads(value))
        cells.append("" if value is None else csv_safe(str(value)))
    return cells
