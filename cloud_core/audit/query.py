"""Searching the audit log: the records matching a set of filters, newest first, a page at a time.

The console's audit page and the CLI's ``audit search`` read through here, on a read-only
connection, so a search never blocks or changes the core's writes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from cloud_core.audit.records import AuditAction, AuditRecord, parse_enum
from cloud_core.audit.schema import record_from_row
from cloud_core.storage.base import Location, RecordFilter, open_audit_reader, time_bounds

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
