"""``safetynet breakglass start|stop|review``: a supervisor's access outside the policy, with a
written reason, at most 30 minutes. ``start`` and ``stop`` go through the core; ``review`` reads
the START/STOP pairs from the audit database (offline)."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from safetynet.commands.arguments import Subcommands, moment
from safetynet.commands.core_connection import (
    Metadata,
    add_core_call_flags,
    call_core,
    grant_service,
)
from safetynet.commands.core_database import add_audit_db_flag, existing_database
from safetynet.commands.exceptions import EXIT_OK

if TYPE_CHECKING:
    from cloud_core.audit import AuditAction, AuditRecord

#: ``audit.search`` returns at most this many records a call.
SEARCH_PAGE = 1000


def register(subcommands: Subcommands) -> None:
    """Add ``safetynet breakglass start|stop|review``."""
    p = subcommands.add_parser(
        "breakglass", help="a supervisor's emergency access, and its review",
        description="Break-glass: a supervisor's access outside the policy, with a "
                    "written reason, at most 30 minutes, recorded as START and STOP.")
    bg = p.add_subparsers(dest="breakglass_command", metavar="ACTION", required=True)
    q = bg.add_parser("start", help="open a break-glass window", description="Open a window.")
    q.add_argument("--camera", action="append", default=[], metavar="CAMERA_ID")
    q.add_argument("--district", action="append", default=[], metavar="DISTRICT_ID")
    q.add_argument("--reason", required=True, help="why, in words (recorded)")
    q.add_argument("--minutes", type=int, default=30,
                   help="at most the policy's maximum, 30 (default 30); more is refused")
    q.add_argument("--clamp", action="store_true", help="more than the maximum: the maximum")
    add_core_call_flags(q)
    q.set_defaults(func=cmd_breakglass_start)
    q = bg.add_parser("stop", help="close a break-glass window", description="Close a window.")
    q.add_argument("breakglass_id", metavar="BREAKGLASS_ID")
    add_core_call_flags(q)
    q.set_defaults(func=cmd_breakglass_stop)
    q = bg.add_parser("review", help="the review report of every START/STOP pair",
                      description="List every break-glass window with its START and STOP records.")
    q.add_argument("--since", metavar="TIME")
    q.add_argument("--until", metavar="TIME")
    q.add_argument("--json", action="store_true")
    add_audit_db_flag(q)
    q.set_defaults(func=cmd_breakglass_review)


def cmd_breakglass_start(args: argparse.Namespace) -> int:
    """Open a window and print how to view through it."""
    from protos.safetynet.v1 import core_pb2

    async def body(channel: grpc.aio.Channel, metadata: Metadata) -> int:
        window = await grant_service(channel).StartBreakGlass(
            core_pb2.StartBreakGlassRequest(camera_ids=args.camera, district_ids=args.district,
                                            reason=args.reason, minutes=args.minutes,
                                            clamp_to_max=args.clamp),
            metadata=metadata, timeout=10)
        print(f"break-glass {window.breakglass_id} open until {window.expires_at.ToJsonString()}; "
              f"view with: safetynet view CAMERA --breakglass {window.breakglass_id}")
        return EXIT_OK

    return call_core(args, body)


def cmd_breakglass_stop(args: argparse.Namespace) -> int:
    """Close a window early."""
    from protos.safetynet.v1 import core_pb2

    async def body(channel: grpc.aio.Channel, metadata: Metadata) -> int:
        window = await grant_service(channel).StopBreakGlass(
            core_pb2.StopBreakGlassRequest(breakglass_id=args.breakglass_id), metadata=metadata,
            timeout=15)
        print(f"break-glass {window.breakglass_id} stopped at {window.stopped_at.ToJsonString()}")
        return EXIT_OK

    return call_core(args, body)


def cmd_breakglass_review(args: argparse.Namespace) -> int:
    """Every break-glass START with its STOP, from the audit log (offline, on the database)."""
    db = existing_database(args)
    since = moment(args.since, "--since") if args.since else None
    until = moment(args.until, "--until") if args.until else None
    windows, refusals = _review(db, since, until)
    if args.json:
        print(json.dumps({"windows": windows, "refused": refusals}, indent=2))
        return EXIT_OK
    print(f"{len(windows)} break-glass window(s), {len(refusals)} refused attempt(s)")
    for refusal in refusals:
        print(f"  refused: {refusal['operator']} ({refusal['agency']}) at {refusal['at']}: "
              f"{refusal['reason']}")
    for row in windows:
        print(f"  {row['breakglass_id']} by {row['supervisor']} ({row['agency']}) "
              f"{row['started_at']} -> {row['stopped_at'] or 'open'} [{row['ended']}]: "
              f"{row['reason']}; cameras {', '.join(row['cameras']) or '-'}; "
              f"districts {', '.join(row['districts']) or '-'}")
    return EXIT_OK


def _review(db: Path, since: datetime | None,
            until: datetime | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(windows, refused attempts), oldest first: each START paired with its STOP, if any."""
    from cloud_core.audit import AuditAction

    starts = _every_record(db, AuditAction.BREAKGLASS_START, since=since, until=until)
    stops = {r.entry.details.get("breakglass_id"): r
             for r in _every_record(db, AuditAction.BREAKGLASS_STOP, since=since)}
    refused = [r for r in starts if r.entry.outcome.value != "ok"]
    windows = []
    for start in reversed([r for r in starts if r.entry.outcome.value == "ok"]):
        window_id = start.entry.details.get("breakglass_id")
        stop = stops.get(window_id)
        windows.append({
            "breakglass_id": window_id, "supervisor": start.entry.operator_id,
            "agency": start.entry.agency, "cameras": list(start.entry.camera_ids),
            "districts": list(start.entry.details.get("district_ids", [])),
            "reason": start.entry.reason,
            "started_at": start.entry.period_start.isoformat() if start.entry.period_start else None,
            "stopped_at": stop.entry.period_end.isoformat() if stop and stop.entry.period_end else None,
            "ended": stop.entry.details.get("ended") if stop else "still open",
            "start_seq": start.seq, "stop_seq": stop.seq if stop else None,
        })
    refusals = [{"operator": r.entry.operator_id, "agency": r.entry.agency, "at": r.at.isoformat(),
                 "reason": r.entry.reason, "seq": r.seq} for r in reversed(refused)]
    return windows, refusals


def _every_record(db: Path, action: AuditAction, *, since: datetime | None,
                  until: datetime | None = None) -> list[AuditRecord]:
    """Every matching record, newest first, paging through the search's 1000-row limit."""
    from cloud_core.audit import search

    found: list[AuditRecord] = []
    before = None
    while True:
        page = search(db, action=action, since=since, until=until, before_seq=before,
                      limit=SEARCH_PAGE)
        found.extend(page)
        if len(page) < SEARCH_PAGE:
            return found
        before = page[-1].seq
