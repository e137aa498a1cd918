"""The tamper-evident audit log: the provision register of who saw which camera, when and why.

Korea's Personal Information Protection Act asks a CCTV operator to keep a register of every
provision of footage: who (operator, agency, source address), what (cameras, action), when (time,
period viewed), why (incident, purpose, legal basis) and with what outcome. The core appends one
``AuditRecord`` per decision, session, incident change, operator change and export.

The log lives in the core's SQLite file beside the registry, in tables prefixed ``audit_``:

* ``audit_records`` — one row per record. Each carries ``seq`` (1, 2, 3…), the previous record's
  hash and its own ``hash`` = SHA-256 (hex) of the record's canonical JSON: every column except
  ``hash`` as one JSON object (``camera_ids`` as an array, ``details`` as an object, times as
  ISO-8601 UTC strings with microseconds, absent values as null), keys sorted, separators ``,``
  and ``:``, ASCII only (``\\uXXXX`` escapes). The first record's ``prev_hash`` is 64 zeros.
  ``export(fmt="json")`` yields exactly these objects plus ``hash``, so a reviewer can recompute
  every hash without this module.
* ``audit_checkpoints`` — Ed25519 signatures over ``(seq, head_hash, at, key_id)``, written every
  N records, every T seconds while records are unattested, and on close. Deleting records that a
  checkpoint covers, or rewriting history before one, is detectable; the tail after the last
  checkpoint is not, so keep checkpoints frequent and, for stronger evidence, copy them off-host.
* ``audit_meta`` — the log's format and the checkpoint public key (a convenience: verify with a
  trusted key supplied from elsewhere to detect a substituted one).

Triggers refuse UPDATE and DELETE on all three tables, refuse INSERT OR REPLACE, and refuse a
record that does not extend the current head. They stop mistakes, not an attacker holding the
file: the hash chain and the signed checkpoints are what make tampering evident.

Writes are durable before the caller proceeds (WAL, ``synchronous=FULL``). ``AuditLog`` reaches
thousands of appends per second with group commit: one writer thread takes every pending entry,
writes them in one ``BEGIN IMMEDIATE`` transaction and commits once. Sequence numbers and
``prev_hash`` are read from the table inside that transaction, so another writer (``append_sync``
from a CLI while the core runs) never forks the chain.

The package, one job a module:

* ``records`` — ``AuditEntry`` (validated on construction) and ``AuditRecord``, the enums;
* ``canonical`` — the canonical JSON and times that hashes and signatures cover;
* ``checkpoints`` — ``Checkpoint`` and ``CheckpointSigner`` (Ed25519);
* ``schema`` — the tables and triggers, and a record's row;
* ``store`` — the SQLite connections: the one writer, read-only readers;
* ``writer`` — ``AuditLog`` (async, group commit) and ``append_sync`` (CLI);
* ``verification`` — ``verify`` and its ``VerifyReport``;
* ``query`` — ``search``, ``journal_head`` (an agent's local journal on the chain);
* ``exports`` — ``export``, ``write_export``, ``count_records``, ``snapshot``.
"""

from cloud_core.audit.checkpoints import CHECKPOINT_KIND, Checkpoint, CheckpointSigner, key_id_of
from cloud_core.audit.exports import ExportFormat, count_records, export, snapshot, write_export
from cloud_core.audit.query import JOURNAL_ACTIONS, MAX_SEARCH_LIMIT, journal_head, search
from cloud_core.audit.records import (
    GENESIS_HASH,
    MAX_DETAILS_BYTES,
    AuditAction,
    AuditEntry,
    AuditOutcome,
    AuditRecord,
)
from cloud_core.audit.schema import LOG_FORMAT
from cloud_core.audit.verification import VerifyReport, verify
from cloud_core.audit.writer import AuditLog, AuditLogConfig, AuditLogState, append_sync

__all__ = [
    "CHECKPOINT_KIND",
    "GENESIS_HASH",
    "JOURNAL_ACTIONS",
    "LOG_FORMAT",
    "MAX_DETAILS_BYTES",
    "MAX_SEARCH_LIMIT",
    "AuditAction",
    "AuditEntry",
    "AuditLog",
    "AuditLogConfig",
    "AuditLogState",
    "AuditOutcome",
    "AuditRecord",
    "Checkpoint",
    "CheckpointSigner",
    "ExportFormat",
    "VerifyReport",
    "append_sync",
    "count_records",
    "export",
    "journal_head",
    "key_id_of",
    "search",
    "snapshot",
    "verify",
    "write_export",
]
