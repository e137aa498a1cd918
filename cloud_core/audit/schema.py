"""The audit log's tables: their SQL, and how a record maps to a row and back.

``audit_records`` holds one row per record, ``audit_checkpoints`` the signed checkpoints,
``audit_meta`` the log's format and checkpoint key. Triggers refuse UPDATE, DELETE, INSERT OR
REPLACE and a record that does not extend the head: they stop mistakes, not an attacker holding
the file (the hash chain and the checkpoints do that).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from cloud_core.audit.canonical import parse_optional_time, parse_time, stored_json
from cloud_core.audit.records import GENESIS_HASH, AuditEntry, AuditRecord
from cloud_core.exceptions import AuditChainBroken

LOG_FORMAT: Final = "safetynet-audit-v1"

RECORD_COLUMNS: Final = (
    "seq", "at", "action", "operator_id", "agency", "source_address", "camera_ids", "incident_id",
    "purpose", "legal_basis", "outcome", "reason", "period_start", "period_end", "details",
    "prev_hash", "hash",
)

_APPEND_ONLY: Final = "audit log is append-only"

SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS audit_records (
        seq INTEGER PRIMARY KEY CHECK (seq >= 1),
        at TEXT NOT NULL,
        action TEXT NOT NULL,
        operator_id TEXT NOT NULL,
        agency TEXT,
        source_address TEXT,
        camera_ids TEXT NOT NULL,
        incident_id TEXT,
        purpose TEXT,
        legal_basis TEXT,
        outcome TEXT NOT NULL,
        reason TEXT,
        period_start TEXT,
        period_end TEXT,
        details TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS audit_records_at ON audit_records (at)",
    "CREATE INDEX IF NOT EXISTS audit_records_operator ON audit_records (operator_id, seq)",
    "CREATE INDEX IF NOT EXISTS audit_records_incident ON audit_records (incident_id, seq)",
    """CREATE TABLE IF NOT EXISTS audit_checkpoints (
        id INTEGER PRIMARY KEY,
        seq INTEGER NOT NULL,
        head_hash TEXT NOT NULL,
        at TEXT NOT NULL,
        key_id TEXT NOT NULL,
        signature TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS audit_meta (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    f"""CREATE TRIGGER IF NOT EXISTS audit_records_extend_head
        BEFORE INSERT ON audit_records
        WHEN NEW.seq IS NOT (SELECT coalesce(max(seq), 0) + 1 FROM audit_records)
          OR NEW.prev_hash IS NOT coalesce(
               (SELECT hash FROM audit_records ORDER BY seq DESC LIMIT 1), '{GENESIS_HASH}')
        BEGIN SELECT RAISE(ABORT, 'audit record does not extend the chain head'); END""",
    *(
        f"""CREATE TRIGGER IF NOT EXISTS {table}_no_{verb.lower()}
            BEFORE {verb} ON {table}
            BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END"""
        for table in ("audit_records", "audit_checkpoints", "audit_meta")
        for verb in ("UPDATE", "DELETE")
    ),
    f"""CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_replace
        BEFORE INSERT ON audit_checkpoints
        WHEN EXISTS (SELECT 1 FROM audit_checkpoints WHERE id = NEW.id)
        BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS audit_meta_no_replace
        BEFORE INSERT ON audit_meta
        WHEN EXISTS (SELECT 1 FROM audit_meta WHERE name = NEW.name)
        BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END""",
)

TRIGGERS: Final = (
    "audit_records_extend_head",
    *(f"{table}_no_{verb}" for table in ("audit_records", "audit_checkpoints", "audit_meta")
      for verb in ("update", "delete")),
    "audit_checkpoints_no_replace",
    "audit_meta_no_replace",
)

INSERT_RECORD: Final = (
    f"INSERT INTO audit_records ({', '.join(RECORD_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in RECORD_COLUMNS)})"
)
INSERT_CHECKPOINT: Final = (
    "INSERT INTO audit_checkpoints (seq, head_hash, at, key_id, signature) VALUES (?, ?, ?, ?, ?)"
)


def record_row(payload: Mapping[str, Any], record_hash: str) -> tuple[Any, ...]:
    """The ``audit_records`` row of a record: its payload in column order, JSON columns as text."""
    values = dict(payload)
    values["camera_ids"] = stored_json(values["camera_ids"])
    values["details"] = stored_json(values["details"])
    values["hash"] = record_hash
    return tuple(values[column] for column in RECORD_COLUMNS)


def payload_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical payload as stored (no validation beyond JSON decoding); ValueError if not."""
    payload = {column: row[column] for column in RECORD_COLUMNS if column != "hash"}
    for column in ("camera_ids", "details"):
        if not isinstance(payload[column], str):
            raise ValueError(f"{column} is not JSON text")
        payload[column] = json.loads(payload[column])
    return payload


def record_from_row(row: Mapping[str, Any]) -> AuditRecord:
    """The record a row holds, validated as on append; AuditChainBroken if it is unreadable."""
    seq = int(row["seq"])
    try:
        payload = payload_from_row(row)
        entry = AuditEntry(
            action=payload["action"],
            operator_id=payload["operator_id"],
            agency=payload["agency"],
            source_address=payload["source_address"],
            camera_ids=tuple(payload["camera_ids"]),
            incident_id=payload["incident_id"],
            purpose=payload["purpose"],
            legal_basis=payload["legal_basis"],
            outcome=payload["outcome"],
            reason=payload["reason"],
            period_start=parse_optional_time(payload["period_start"]),
            period_end=parse_optional_time(payload["period_end"]),
            details=payload["details"],
        )
        return AuditRecord(seq=seq, at=parse_time(payload["at"]), prev_hash=str(row["prev_hash"]),
                           hash=str(row["hash"]), entry=entry)
    except (ValueError, TypeError) as exc:
        raise AuditChainBroken(seq, f"unreadable record ({exc})") from exc
