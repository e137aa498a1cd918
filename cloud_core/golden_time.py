"""Golden time, recorded by the core: for every incident-backed session, the incident's report,
the grant (the session opening) and the first frame the client decoded, per camera.

Clients (the CLI viewer, the console, any WHEP player) report their first decoded frame
(``SessionService.ReportFirstFrame``, ``POST /api/sessions/{id}/first-frame``); the core stamps
it with its own clock, so a client's clock never enters the figures. The first report of a
session counts; later ones are ignored. :func:`GoldenTimeStore.daily` gives p50/p95 by service
and day; :func:`GoldenTimeStore.export_csv` the rows behind them.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cloud_core.storage.database import Database
from cloud_core.timestamps import iso

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS golden_time (
    session_id TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    service TEXT NOT NULL,
    camera_id TEXT NOT NULL,
    reported_at TEXT NOT NULL,
    granted_at TEXT NOT NULL,
    first_frame_at TEXT NOT NULL,
    client TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS golden_time_at ON golden_time(first_frame_at);
"""

CLIENTS: Final = ("cli", "console", "whep", "officer", "other")
_COLUMNS: Final = ("session_id", "incident_id", "service", "camera_id", "reported_at",
                   "granted_at", "first_frame_at", "client")


@dataclass(frozen=True)
class FirstFrame:
    session_id: str
    incident_id: str
    service: str
    camera_id: str
    reported_at: datetime
    granted_at: datetime
    first_frame_at: datetime
    client: str

    @property
    def report_to_frame_ms(self) -> float:
        return (self.first_frame_at - self.reported_at).total_seconds() * 1000

    @property
    def grant_to_frame_ms(self) -> float:
        return (self.first_frame_at - self.granted_at).total_seconds() * 1000


class GoldenTimeStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._db.schema(SCHEMA)

    def record(self, row: FirstFrame) -> bool:
        """Keep the session's first frame; False when it was reported already."""
        cursor = self._db.execute(
            f"INSERT INTO golden_time ({', '.join(_COLUMNS)}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO NOTHING",
            [row.session_id, row.incident_id, row.service, row.camera_id, iso(row.reported_at),
             iso(row.granted_at), iso(row.first_frame_at), row.client])
        return cursor.rowcount > 0

    def rows(self, since: datetime | None = None,
             until: datetime | None = None) -> list[FirstFrame]:
        sql, params = f"SELECT {', '.join(_COLUMNS)} FROM golden_time WHERE 1=1", []
        if since is not None:
            sql += " AND first_frame_at >= ?"
            params.append(iso(since))
        if until is not None:
            sql += " AND first_frame_at < ?"
            params.append(iso(until))
        return [FirstFrame(str(r[0]), str(r[1]), str(r[2]), str(r[3]),
                           datetime.fromisoformat(str(r[4])), datetime.fromisoformat(str(r[5])),
                           datetime.fromisoformat(str(r[6])), str(r[7]))
                for r in self._db.execute(sql + " ORDER BY first_frame_at", params)]

    def daily(self, since: datetime | None = None,
              until: datetime | None = None) -> list[dict[str, object]]:
        """p50/p95 of report → first frame and grant → first frame, by service and UTC day.

        Per incident and camera the first session counts (a camera re-opened later is not a
        new golden time)."""
        first: dict[tuple[str, str], FirstFrame] = {}
        for row in self.rows(since, until):
            first.setdefault((row.incident_id, row.camera_id), row)
        groups: dict[tuple[str, str], list[FirstFrame]] = defaultdict(list)
        for row in first.values():
            groups[(row.service, row.first_frame_at.date().isoformat())].append(row)
        return [{"service": service, "day": day, "cameras": len(rows),
                 "incidents": len({r.incident_id for r in rows}),
                 "report_to_first_frame_ms": _percentiles([r.report_to_frame_ms for r in rows]),
                 "grant_to_first_frame_ms": _percentiles([r.grant_to_frame_ms for r in rows])}
                for (service, day), rows in sorted(groups.items())]

    def export_csv(self, since: datetime | None = None, until: datetime | None = None) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([*_COLUMNS, "report_to_first_frame_ms", "grant_to_first_frame_ms"])
        for row in self.rows(since, until):
            writer.writerow([row.session_id, row.incident_id, row.service, row.camera_id,
                             iso(row.reported_at), iso(row.granted_at), iso(row.first_frame_at),
                             row.client, round(row.report_to_frame_ms, 1),
                             round(row.grant_to_frame_ms, 1)])
        return out.getvalue()


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def nearest(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]

    return {"p50": round(statistics.median(ordered), 1), "p95": round(nearest(95), 1),
            "max": round(ordered[-1], 1)}
