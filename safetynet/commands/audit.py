"""``safetynet audit verify|export``: the tamper-evident audit log. ``verify`` checks a database
file (a copy will do, offline); ``export`` goes through the core with an auditor's token, or reads
a database file with ``--db``, and records the export either way."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from safetynet.commands.arguments import Subcommands, moment
from safetynet.commands.core_connection import (
    Metadata,
    add_core_flag,
    add_token_flag,
    audit_service,
    call_core,
)
from safetynet.commands.core_database import add_audit_db_flag, existing_database
from safetynet.commands.exceptions import EXIT_FAILED, EXIT_OK, UserError

if TYPE_CHECKING:
    from datetime import datetime

    from cloud_core.audit import VerifyReport
    from runtime.checkpoint_witness import WitnessedCheckpoint


def register(subcommands: Subcommands) -> None:
    """Add ``safetynet audit verify|backup|export``."""
    p = subcommands.add_parser(
        "audit", help="verify and export the audit log",
        description="The tamper-evident audit log: verify its chain, export it.")
    au = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    q = au.add_parser("verify", help="check the hash chain and signed checkpoints (offline)",
                      description="Verify the audit chain of a core database (a copy will do; the "
                                  "core need not run). Exit 0 and OK when it holds, 1 naming the "
                                  "first broken record otherwise.")
    add_audit_db_flag(q)
    q.add_argument("--dsn", metavar="URL",
                   help="verify the chain in this PostgreSQL database instead of a file "
                        "(postgresql://user@host/db; keep the password in ~/.pgpass or PGPASSWORD)")
    q.add_argument("--public-key", metavar="FILE",
                   help="the trusted checkpoint public key (default: audit-checkpoint.pub, "
                        "else grant-signing.pub, beside the db)")
    q.add_argument("--witness", metavar="FILE", action="append", default=[],
                   help="a witness's copy of the checkpoints (an agent's audit-witness.jsonl, "
                        "the auditor's file); repeatable")
    q.set_defaults(func=cmd_audit_verify)
    b = au.add_parser("backup", help="a consistent copy of the audit log (WAL included)",
                      description="Copy the audit database with SQLite's backup API while the "
                                  "core runs: the copy holds every committed record, including "
                                  "those still in the -wal file, and verifies on its own.")
    add_audit_db_flag(b)
    b.add_argument("--out", metavar="FILE", required=True, help="the copy to create (0600)")
    b.set_defaults(func=cmd_audit_backup)
    _register_export(au)


def _register_export(au: Subcommands) -> None:
    q = au.add_parser("export", help="export records for a period (CSV or JSON)",
                      description="Export audit records, for the monthly review. Through the core "
                                  "with an auditor's token, or from a database file with --db.")
    q.add_argument("--since", metavar="TIME")
    q.add_argument("--until", metavar="TIME")
    q.add_argument("--format", choices=["csv", "json"], default="csv")
    q.add_argument("--out", metavar="FILE", help="write to FILE instead of standard output")
    q.add_argument("--db", metavar="FILE", help="export from this audit database instead of the core")
    add_core_flag(q)
    add_token_flag(q, who="auditor")
    q.set_defaults(func=cmd_audit_export)


# --- verify -------------------------------------------------------------------------------

def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Check the chain and checkpoints; OK and exit 0, or BROKEN at the first bad record, exit 1."""
    from cloud_core.audit import verify
    from cloud_core.exceptions import AuditError, StorageError
    from cloud_core.storage.base import describe, is_postgres

    if args.dsn is not None and not is_postgres(args.dsn):
        raise UserError("--dsn takes a postgresql:// URL")
    db: Path | str = args.dsn if args.dsn is not None else existing_database(args)
    # With --dsn the keys are looked for in the current folder, else beside the database.
    public_key = _trusted_key(args, Path("core.sqlite3") if args.dsn else Path(db))
    witnesses = _witnesses(args.witness)
    try:
        report = verify(db, public_key, witnesses)  # type: ignore[arg-type]
    except StorageError as exc:
        raise UserError(str(exc), EXIT_FAILED) from exc
    except AuditError as exc:
        raise UserError(f"cannot read {describe(db)} as an audit log: {exc}", EXIT_FAILED) from exc
    if not report.ok:
        print(f"BROKEN at record {report.broken_seq}: {report.problem}")
        for problem in report.problems[1:5]:
            print(f"  also: {problem}")
        return EXIT_FAILED
    print(f"OK: {report.records} records, head {report.head_seq} {report.head_hash}; "
          f"{_attestation(report, trusted_key=public_key is not None)}")
    if witnesses:
        print(f"matches {len(witnesses)} witnessed checkpoint(s) from {len(args.witness)} "
              "witness file(s)")
    for warning in report.warnings:
        print(f"warning: {warning}")
    return EXIT_OK


def _trusted_key(args: argparse.Namespace, db: Path) -> object | None:
    """The --public-key given, else the checkpoint key's (or, for older logs, the grant key's)
    public half beside the database, else None."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    if args.public_key:
        if not Path(args.public_key).exists():
            raise UserError(f"no public key at {args.public_key}")
        candidates = [Path(args.public_key)]
    else:
        candidates = [db.parent / "audit-checkpoint.pub", db.parent / "grant-signing.pub"]
    for key_path in candidates:
        if key_path.exists():
            try:
                return load_pem_public_key(key_path.read_bytes())
            except ValueError as exc:
                raise UserError(f"{key_path} is not a PEM public key: {exc}") from exc
    return None


def _witnesses(paths: list[str]) -> list[WitnessedCheckpoint]:
    from runtime.checkpoint_witness import WitnessFile, WitnessFileError

    held: list[WitnessedCheckpoint] = []
    for path in paths:
        if not Path(path).is_file():
            raise UserError(f"no witness file at {path}")
        try:
            held.extend(WitnessFile(Path(path)).read())
        except WitnessFileError as exc:
            raise UserError(f"cannot read the witness file: {exc}") from exc
    return held


def cmd_audit_backup(args: argparse.Namespace) -> int:
    """Copy the audit log consistently (SQLite backup API), even while the core writes it."""
    from cloud_core.audit import snapshot
    from cloud_core.exceptions import AuditError

    db = existing_database(args)
    try:
        records = snapshot(db, Path(args.out))
    except AuditError as exc:
        raise UserError(str(exc), EXIT_FAILED) from exc
    print(f"{records} records copied to {args.out}")
    return EXIT_OK


def _attestation(report: VerifyReport, *, trusted_key: bool) -> str:
    """What vouches for the chain's newest records: the last checkpoint, and whose key signed it."""
    if report.last_checkpoint_seq is None:
        return ("no signed checkpoint yet (the core signs one within seconds and when it "
                "stops), so truncation of the newest records is not yet detectable")
    if trusted_key:
        return (f"last signed checkpoint at record {report.last_checkpoint_seq}, "
                "signed by the trusted key")
    return (f"last signed checkpoint at record {report.last_checkpoint_seq}, checked "
            "against the key stored in the file (give --public-key to trust it)")


# --- export -------------------------------------------------------------------------------

def cmd_audit_export(args: argparse.Namespace) -> int:
    """Export [--since, --until) as CSV or JSON, from ``--db`` or through the core."""
    since = moment(args.since, "--since") if args.since else None
    until = moment(args.until, "--until") if args.until else None
    if args.db:
        return _export_from_file(args, since, until)

    from protos.safetynet.v1 import core_pb2

    request = core_pb2.ExportAuditRequest(format=args.format)
    if since:
        request.since.FromDatetime(since)
    if until:
        request.until.FromDatetime(until)

    async def body(channel: grpc.aio.Channel, metadata: Metadata) -> int:
        response = await audit_service(channel).Export(request, metadata=metadata, timeout=120)
        _emit(args, response.content, response.records)
        return EXIT_OK

    return call_core(args, body)


def _export_from_file(args: argparse.Namespace, since: datetime | None,
                      until: datetime | None) -> int:
    """Export from the audit database itself; the export is recorded in it as this local user."""
    from cloud_core.audit import AuditAction, AuditEntry, append_sync, count_records, export

    db = existing_database(args)
    content = export(db, since, until, args.format)
    count = count_records(content, args.format)
    append_sync(db, AuditEntry(action=AuditAction.AUDIT_EXPORT,
                               operator_id=f"local:{getpass.getuser()}",
                               period_start=since, period_end=until,
                               details={"format": args.format, "records": count}))
    _emit(args, content.encode(), count)
    return EXIT_OK


def _emit(args: argparse.Namespace, content: bytes, count: int) -> None:
    if args.out:
        Path(args.out).write_bytes(content)
        print(f"{count} records written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(content)
