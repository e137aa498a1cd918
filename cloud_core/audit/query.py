"""Searching the audit log: the records matching a set of filters, newest first, a page at a time.

The console's audit page and the CLI's ``audit search`` read through here, on a read-only
connection, so a search never blocks or changes the core's writes.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Final

from cloud_core.audit.records import AuditAction, AuditRecord, parse_enum
from cloud_core.audit.schema import record_from_row
from cloud_core.audit.store import open_readonly
from cloud_core.storage.base import (
    Location,
    RecordFilter,
    is_postgres,
    open_audit_reader,
    time_bounds,
)

MAX_SEARCH_LIMIT: Final = 1000


def search(
    db_path: Location,
    *,
    operator_id: str | None = None,
    camera_id: str | None = None,
    incident_id: str | None = None,
    action: AuditAction | str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_seq: int | None = None,
    limit: int = 100,
) -> list[AuditRecord]:
    """Records matching every given filter, newest first (the console's audit page).

    ``since`` is inclusive and ``until`` exclusive, on the record time ``at``. Page with
    ``before_seq`` = the smallest seq of the previous page.
    """
    if not 1 <= limit <= MAX_SEARCH_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_SEARCH_LIMIT}")
    start, end = time_bounds(since, until)
    where = RecordFilter(
        operator_id=operator_id, camera_id=camera_id, incident_id=incident_id,
        action=None if action is None else parse_enum(AuditAction, action, "audit action").value,
        since=start, until=end, before_seq=before_seq, newest_first=True, limit=limit)
    with open_audit_reader(db_path) as reader:
        return [record_from_row(row) for row in reader.records(where)]


#: The actions an agent's local journal carries onto the chain (docs/local-mode.md).
JOURNAL_ACTIONS: Final = (AuditAction.LOCAL_SIGN_IN, AuditAction.LOCAL_VIEW,
                          AuditAction.LOCAL_VIEW_END)


def journal_head(db_path: Location, district_id: str) -> tuple[int, str] | None:
    """The last journal entry of ``district_id`` on the chain: (its journal seq, its hash)."""
    if is_postgres(db_path):
        return _journal_head_scanned(db_path, district_id)
    marks = ", ".join("?" * len(JOURNAL_ACTIONS))
    sql = (f"SELECT json_extract(details, '$.journal.seq'), json_extract(details, '$.journal.hash') "
           f"FROM audit_records WHERE action IN ({marks}) "
           f"AND json_extract(details, '$.journal.district') = ? ORDER BY seq DESC LIMIT 1")
    with open_readonly(Path(db_path)) as conn:
        row = conn.execute(sql, [*(a.value for a in JOURNAL_ACTIONS), district_id]).fetchone()
    return (int(row[0]), str(row[1])) if row else None


def _journal_head_scanned(db_path: Location, district_id: str) -> tuple[int, str] | None:
    """``journal_head`` on any backend: the newest journal record of each action, read back."""
    best: tuple[int, int, str] | None = None  # (chain seq, journal seq, journal hash)
    with open_audit_reader(db_path) as reader:
        for action in JOURNAL_ACTIONS:
            for row in reader.records(RecordFilter(action=action.value, newest_first=True)):
                details = row["details"]
                journal = (json.loads(details) if isinstance(details, str) else details or {}
                           ).get("journal", {})
                if journal.get("district") == district_id:
                    if best is None or int(row["seq"]) > best[0]:
                        best = (int(row["seq"]), int(journal["seq"]), str(journal["hash"]))
                    break
    return None if best is None else (best[1], best[2])
