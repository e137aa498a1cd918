"""Searching the audit log: the records matching a set of filters, newest first, a page at a time.

The console's audit page and the CLI's ``audit search`` read through here, on a read-only
connection, so a search never blocks or changes the core's writes.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Final

from cloud_core.audit.records import AuditAction, AuditRecord, parse_enum
from cloud_core.audit.schema import RECORD_COLUMNS, record_from_row
from cloud_core.audit.store import open_readonly, time_clauses

MAX_SEARCH_LIMIT: Final = 1000


def search(
    db_path: Path,
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
    clauses, params = time_clauses(since, until)
    if operator_id is not None:
        clauses.append("operator_id = ?")
        params.append(operator_id)
    if incident_id is not None:
        clauses.append("incident_id = ?")
        params.append(incident_id)
    if action is not None:
        clauses.append("action = ?")
        params.append(parse_enum(AuditAction, action, "audit action").value)
    if camera_id is not None:
        clauses.append("EXISTS (SELECT 1 FROM json_each(audit_records.camera_ids) WHERE value = ?)")
        params.append(camera_id)
    if before_seq is not None:
        clauses.append("seq < ?")
        params.append(before_seq)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = (f"SELECT {', '.join(RECORD_COLUMNS)} FROM audit_records {where} "
           f"ORDER BY seq DESC LIMIT ?")
    with open_readonly(Path(db_path)) as conn:
        rows = conn.execute(sql, [*params, limit]).fetchall()
    return [record_from_row(row) for row in rows]


#: The actions an agent's local journal carries onto the chain (docs/local-mode.md).
JOURNAL_ACTIONS: Final = (AuditAction.LOCAL_SIGN_IN, AuditAction.LOCAL_VIEW,
                          AuditAction.LOCAL_VIEW_END)


def journal_head(db_path: Path, district_id: str) -> tuple[int, str] | None:
    """The last journal entry of ``district_id`` on the chain: (its journal seq, its hash)."""
    marks = ", ".join("?" * len(JOURNAL_ACTIONS))
    sql = (f"SELECT json_extract(details, '$.journal.seq'), json_extract(details, '$.journal.hash') "
           f"FROM audit_records WHERE action IN ({marks}) "
           f"AND json_extract(details, '$.journal.district') = ? ORDER BY seq DESC LIMIT 1")
    with open_readonly(Path(db_path)) as conn:
        row = conn.execute(sql, [*(a.value for a in JOURNAL_ACTIONS), district_id]).fetchone()
    return (int(row[0]), str(row[1])) if row else None
