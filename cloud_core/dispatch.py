"""112 dispatch, stored: which field officers are assigned to which incident, and what the 112
room pushed to them (stills with their JPEG and its hash, live-camera hand-offs)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cloud_core.storage.database import Database
from cloud_core.timestamps import iso

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS dispatch_assignments (
    incident_id TEXT NOT NULL,
    officer_id TEXT NOT NULL,
    assigned_by TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (incident_id, officer_id)
);
CREATE TABLE IF NOT EXISTS dispatch_pushes (
    push_id TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    camera_id TEXT NOT NULL,
    sha256 TEXT NOT NULL DEFAULT '',
    bytes INTEGER NOT NULL DEFAULT 0,
    at TEXT NOT NULL,
    pushed_by TEXT NOT NULL,
    jpeg BLOB
);
CREATE INDEX IF NOT EXISTS dispatch_pushes_incident ON dispatch_pushes(incident_id, at);
"""

STILL: Final = "still"
CAMERA: Final = "camera"
MAX_STILL_BYTES: Final = 2 * 1024 * 1024


@dataclass(frozen=True)
class DispatchPush:
    push_id: str
    incident_id: str
    kind: str              # "still" or "camera"
    camera_id: str
    sha256: str
    bytes: int
    at: datetime
    pushed_by: str


class DispatchStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._db.schema(SCHEMA)

    @staticmethod
    def new_push_id() -> str:
        return f"push-{uuid.uuid4().hex[:16]}"

    def assign(self, incident_id: str, officer_id: str, by: str, at: datetime) -> bool:
        cursor = self._db.execute(
            "INSERT INTO dispatch_assignments (incident_id, officer_id, assigned_by, at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (incident_id, officer_id) DO NOTHING",
            [incident_id, officer_id, by, iso(at)])
        return cursor.rowcount > 0

    def unassign(self, incident_id: str, officer_id: str) -> bool:
        cursor = self._db.execute(
            "DELETE FROM dispatch_assignments WHERE incident_id=? AND officer_id=?",
            [incident_id, officer_id])
        return cursor.rowcount > 0

    def officers(self, incident_id: str) -> list[str]:
        return [str(r[0]) for r in self._db.execute(
            "SELECT officer_id FROM dispatch_assignments WHERE incident_id=? ORDER BY at",
            [incident_id])]

    def is_assigned(self, incident_id: str, officer_id: str) -> bool:
        return self._db.execute(
            "SELECT 1 FROM dispatch_assignments WHERE incident_id=? AND officer_id=?",
            [incident_id, officer_id]).fetchone() is not None

    def incidents_of(self, officer_id: str) -> list[str]:
        return [str(r[0]) for r in self._db.execute(
            "SELECT incident_id FROM dispatch_assignments WHERE officer_id=? ORDER BY at DESC",
            [officer_id])]

    def add_push(self, push: DispatchPush, jpeg: bytes | None = None) -> None:
        self._db.execute(
            "INSERT INTO dispatch_pushes (push_id, incident_id, kind, camera_id, sha256, bytes, "
            "at, pushed_by, jpeg) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [push.push_id, push.incident_id, push.kind, push.camera_id, push.sha256, push.bytes,
             iso(push.at), push.pushed_by, jpeg])

    def pushes(self, incident_id: str) -> list[DispatchPush]:
        rows = self._db.execute(
            "SELECT push_id, incident_id, kind, camera_id, sha256, bytes, at, pushed_by "
            "FROM dispatch_pushes WHERE incident_id=? ORDER BY at", [incident_id]).fetchall()
        return [DispatchPush(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), int(r[5]),
                             datetime.fromisoformat(str(r[6])), str(r[7])) for r in rows]

    def handed_off(self, incident_id: str, camera_id: str) -> bool:
        return self._db.execute(
            "SELECT 1 FROM dispatch_pushes WHERE incident_id=? AND camera_id=? AND kind=?",
            [incident_id, camera_id, CAMERA]).fetchone() is not None

    def still(self, push_id: str) -> tuple[DispatchPush, bytes] | None:
        row = self._db.execute("SELECT incident_id, jpeg FROM dispatch_pushes WHERE push_id=? "
                               "AND kind=?", [push_id, STILL]).fetchone()
        if row is None or row[1] is None:
            return None
        push = next(p for p in self.pushes(str(row[0])) if p.push_id == push_id)
        return push, bytes(row[1])
