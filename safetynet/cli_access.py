"""``safetynet operator | incident | audit | breakglass``: the access-control command lines.

``operator`` and ``audit verify`` work on the core's database file directly (an admin on the core
host; verify works on a copy, offline). ``incident``, ``breakglass`` and ``audit export`` talk to
the running core with an operator token (``--token-file`` or ``$SAFETYNET_TOKEN``).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from safetynet.cli import DEFAULT_CORE, EXIT_FAILED, EXIT_OK, UserError, _core_address, _token

DEFAULT_DB = "core.sqlite3"
DEFAULT_AUDIT_DB = "audit.sqlite3"


def _when(value: str, flag: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise UserError(f"{flag} must be an ISO date or time (e.g. 2026-11-01 or "
                        f"2026-11-01T09:00+09:00), got {value!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _db(args: argparse.Namespace) -> Path:
    path = Path(args.db)
    if not path.exists():
        raise UserError(f"no core database at {path} (use --db FILE)")
    return path


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")


# --- operator -----------------------------------------------------------------------------

def _operator_store(args: argparse.Namespace) -> tuple[Any, Any, Path]:
    from cloud_core.operators import OperatorStore
    from cloud_core.policy import Policy, load_policy
    from cloud_core.registry import Registry

    registry = Registry(Path(args.db))
    policy = load_policy(args.policy) if getattr(args, "policy", None) else Policy.default()
    return OperatorStore(registry.db), policy, Path(args.db)


def _audit_operator_change(db: Path, action: str, operator: Any) -> None:
    """Operator changes go on the record, in the audit database beside the core's database."""
    from cloud_core.audit import AuditEntry, append_sync

    append_sync(db.parent / DEFAULT_AUDIT_DB, AuditEntry(action=action, operator_id=f"local:{getpass.getuser()}",
                               details={"operator": operator.operator_id, "agency": operator.agency,
                                        "role": str(operator.role)}))


def cmd_operator_add(args: argparse.Namespace) -> int:
    store, policy, db = _operator_store(args)
    try:
        operator, token = store.add(args.name, agency=args.agency, role=args.role, policy=policy)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    _audit_operator_change(db, "operator.add", operator)
    if args.token_out:
        _write_secret(Path(args.token_out), token)
        print(f"operator {operator.operator_id} ({operator.agency}, {operator.role}) added; "
              f"token written to {args.token_out} (0600)")
    else:
        print(f"operator {operator.operator_id} ({operator.agency}, {operator.role}) added.")
        print("Token (shown once, store it now):", file=sys.stderr)
        print(token)
    return EXIT_OK


def cmd_operator_list(args: argparse.Namespace) -> int:
    _db(args)
    store, _, _ = _operator_store(args)
    rows = [{"operator_id": o.operator_id, "agency": o.agency, "role": str(o.role),
             "enabled": o.enabled} for o in store.list_all()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            state = "enabled" if row["enabled"] else "DISABLED"
            print(f"{row['operator_id']:<20} {row['agency']:<22} {row['role']:<11} {state}")
    return EXIT_OK


def cmd_operator_disable(args: argparse.Namespace) -> int:
    _db(args)
    store, _, db = _operator_store(args)
    try:
        operator = store.disable(args.name)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    _audit_operator_change(db, "operator.disable", operator)
    print(f"operator {operator.operator_id} disabled; the core ends their sessions within seconds")
    return EXIT_OK


# --- talking to the core ------------------------------------------------------------------

def _call(args: argparse.Namespace, body: Callable[[grpc.aio.Channel, tuple[tuple[str, str], ...]],
                                                   Awaitable[int]]) -> int:
    core = _core_address(args)
    token = _token(args)
    if not token:
        raise UserError("an operator token is needed: --token-file FILE or $SAFETYNET_TOKEN")
    metadata = (("authorization", f"Bearer {token}"),)

    async def run() -> int:
        async with grpc.aio.insecure_channel(core) as channel:
            try:
                return await body(channel, metadata)
            except grpc.aio.AioRpcError as exc:
                raise UserError(f"{exc.details()} ({exc.code().name})", EXIT_FAILED) from exc

    return asyncio.run(run())


def _incident_row(incident: Any) -> dict[str, Any]:
    return {
        "incident_id": incident.incident_id, "type": incident.incident_type,
        "service": incident.service, "lat": incident.location.lat, "lon": incident.location.lon,
        "radius_m": incident.radius_m, "agencies": list(incident.agencies), "open": incident.open,
        "opened_at": incident.opened_at.ToJsonString(),
        "expires_at": incident.expires_at.ToJsonString(),
        "closed_at": incident.closed_at.ToJsonString() if incident.HasField("closed_at") else None,
        "legal_basis": incident.legal_basis, "external_ref": incident.external_ref,
    }


def _print_report(report: Any, as_json: bool) -> None:
    from protos.safetynet.v1 import mqtt_pb2

    row = _incident_row(report.incident)
    cameras = [{"camera_id": c.camera_id, "name": c.name, "district_id": c.district_id,
                "distance_m": round(c.distance_m, 1),
                "status": mqtt_pb2.CameraState.Name(c.status).removeprefix("CAMERA_STATE_").lower()}
               for c in report.cameras]
    facilities = [{"kind": f.kind, "name": f.name, "distance_m": round(f.distance_m, 1),
                   "detail": f.detail} for f in report.facilities]
    if as_json:
        print(json.dumps({**row, "cameras": cameras, "facilities": facilities}, indent=2))
        return
    print(f"incident {row['incident_id']}: {row['type']} ({row['service']}) at "
          f"{row['lat']:.5f},{row['lon']:.5f} r={row['radius_m']:.0f} m, "
          f"{'open until ' + row['expires_at'] if row['open'] else 'closed'}")
    print(f"  agencies: {', '.join(row['agencies'])}; legal basis: {row['legal_basis']}")
    for camera in cameras:
        print(f"  {camera['camera_id']:<16} {camera['distance_m']:>7.0f} m  {camera['status']:<8} "
              f"{camera['name']}")
    for facility in facilities:
        print(f"  [{facility['kind']}] {facility['name']} {facility['distance_m']:.0f} m "
              f"({facility['detail']})")


def cmd_incident_report(args: argparse.Namespace) -> int:
    from protos.safetynet.v1 import core_pb2, core_pb2_grpc

    try:
        lat, lon = (float(x) for x in args.at.split(","))
    except ValueError as exc:
        raise UserError(f"--at must be LAT,LON, got {args.at!r}") from exc
    request = core_pb2.ReportIncidentRequest(
        incident_type=args.type, location=core_pb2.GeoPoint(lat=lat, lon=lon),
        radius_m=args.radius or 0, external_ref=args.ref or "", legal_basis=args.legal_basis or "",
        service=args.service or "")
    request.occurred_at.FromDatetime(_when(args.occurred_at, "--occurred-at") if args.occurred_at
                                     else datetime.now(UTC))

    async def body(channel: grpc.aio.Channel, metadata: Any) -> int:
        report = await core_pb2_grpc.IncidentServiceStub(channel).Report(request, metadata=metadata,
                                                                         timeout=10)
        _print_report(report, args.json)
        return EXIT_OK

    return _call(args, body)


def cmd_incident_close(args: argparse.Namespace) -> int:
    from protos.safetynet.v1 import core_pb2, core_pb2_grpc

    async def body(channel: grpc.aio.Channel, metadata: Any) -> int:
        incident = await core_pb2_grpc.IncidentServiceStub(channel).Close(
            core_pb2.CloseIncidentRequest(incident_id=args.incident_id, reason=args.reason),
            metadata=metadata, timeout=15)
        print(json.dumps(_incident_row(incident), indent=2) if args.json else
              f"incident {incident.incident_id} closed: {args.reason}")
        return EXIT_OK

    return _call(args, body)


def cmd_incident_list(args: argparse.Namespace) -> int:
    from protos.safetynet.v1 import core_pb2, core_pb2_grpc

    async def body(channel: grpc.aio.Channel, metadata: Any) -> int:
        response = await core_pb2_grpc.IncidentServiceStub(channel).List(
            core_pb2.ListIncidentsRequest(include_closed=args.all), metadata=metadata, timeout=10)
        rows = [_incident_row(i) for i in response.incidents]
        if args.json:
            print(json.dumps(rows, indent=2))
        for row in [] if args.json else rows:
            print(f"{row['incident_id']:<28} {row['type']:<18} {'open' if row['open'] else 'closed':<6} "
                  f"{row['lat']:.5f},{row['lon']:.5f} r={row['radius_m']:.0f} m")
        return EXIT_OK

    return _call(args, body)


# --- break-glass --------------------------------------------------------------------------

def cmd_breakglass_start(args: argparse.Namespace) -> int:
    from protos.safetynet.v1 import core_pb2, core_pb2_grpc

    async def body(channel: grpc.aio.Channel, metadata: Any) -> int:
        window = await core_pb2_grpc.GrantServiceStub(channel).StartBreakGlass(
            core_pb2.StartBreakGlassRequest(camera_ids=args.camera, district_ids=args.district,
                                            reason=args.reason, minutes=args.minutes),
            metadata=metadata, timeout=10)
        print(f"break-glass {window.breakglass_id} open until {window.expires_at.ToJsonString()}; "
              f"view with: safetynet view CAMERA --breakglass {window.breakglass_id}")
        return EXIT_OK

    return _call(args, body)


def cmd_breakglass_stop(args: argparse.Namespace) -> int:
    from protos.safetynet.v1 import core_pb2, core_pb2_grpc

    async def body(channel: grpc.aio.Channel, metadata: Any) -> int:
        window = await core_pb2_grpc.GrantServiceStub(channel).StopBreakGlass(
            core_pb2.StopBreakGlassRequest(breakglass_id=args.breakglass_id), metadata=metadata,
            timeout=15)
        print(f"break-glass {window.breakglass_id} stopped at {window.stopped_at.ToJsonString()}")
        return EXIT_OK

    return _call(args, body)


def cmd_breakglass_review(args: argparse.Namespace) -> int:
    """Every break-glass START with its STOP, from the audit log (offline, on the database)."""
    from cloud_core.audit import search

    db = _db(args)
    since = _when(args.since, "--since") if args.since else None
    until = _when(args.until, "--until") if args.until else None
    starts = _all(search, db, action="breakglass.start", since=since, until=until)
    stops = {r.entry.details.get("breakglass_id"): r
             for r in _all(search, db, action="breakglass.stop", since=since)}
    rows = []
    refused = [r for r in starts if r.entry.outcome.value != "ok"]
    starts = [r for r in starts if r.entry.outcome.value == "ok"]
    for start in reversed(starts):
        window_id = start.entry.details.get("breakglass_id")
        stop = stops.get(window_id)
        rows.append({
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
    if args.json:
        print(json.dumps({"windows": rows, "refused": refusals}, indent=2))
    else:
        print(f"{len(rows)} break-glass window(s), {len(refusals)} refused attempt(s)")
        for refusal in refusals:
            print(f"  refused: {refusal['operator']} ({refusal['agency']}) at {refusal['at']}: "
                  f"{refusal['reason']}")
        for row in rows:
            print(f"  {row['breakglass_id']} by {row['supervisor']} ({row['agency']}) "
                  f"{row['started_at']} -> {row['stopped_at'] or 'open'} [{row['ended']}]: "
                  f"{row['reason']}; cameras {', '.join(row['cameras']) or '-'}; "
                  f"districts {', '.join(row['districts']) or '-'}")
    return EXIT_OK


def _all(search: Any, db: Path, **filters: Any) -> list[Any]:
    """Every matching record, newest first, paging through the search's 1000-row limit."""
    found: list[Any] = []
    before = None
    while True:
        page = search(db, before_seq=before, limit=1000, **filters)
        found.extend(page)
        if len(page) < 1000:
            return found
        before = page[-1].seq


# --- audit --------------------------------------------------------------------------------

def cmd_audit_verify(args: argparse.Namespace) -> int:
    from cloud_core.audit import verify
    from cloud_core.exceptions import AuditError

    db = _db(args)
    public_key = None
    key_path = Path(args.public_key) if args.public_key else db.parent / "grant-signing.pub"
    if key_path.exists():
        from cryptography.hazmat.primitives.serialization import load_pem_public_key
        public_key = load_pem_public_key(key_path.read_bytes())
    elif args.public_key:
        raise UserError(f"no public key at {args.public_key}")
    try:
        report = verify(db, public_key)  # type: ignore[arg-type]
    except AuditError as exc:
        raise UserError(f"cannot read {db} as an audit log: {exc}", EXIT_FAILED) from exc
    if report.ok:
        if report.last_checkpoint_seq is None:
            attested = ("no signed checkpoint yet (the core signs one every minute and when it "
                        "stops), so truncation of the newest records is not yet detectable")
        elif public_key is not None:
            attested = (f"last signed checkpoint at record {report.last_checkpoint_seq}, "
                        "signed by the trusted key")
        else:
            attested = (f"last signed checkpoint at record {report.last_checkpoint_seq}, checked "
                        "against the key stored in the file (give --public-key to trust it)")
        print(f"OK: {report.records} records, head {report.head_seq} {report.head_hash}; {attested}")
        for warning in report.warnings:
            print(f"warning: {warning}")
        return EXIT_OK
    print(f"BROKEN at record {report.broken_seq}: {report.problem}")
    for problem in report.problems[1:5]:
        print(f"  also: {problem}")
    return EXIT_FAILED


def cmd_audit_export(args: argparse.Namespace) -> int:
    since = _when(args.since, "--since") if args.since else None
    until = _when(args.until, "--until") if args.until else None
    if args.db:
        from cloud_core.audit import AuditEntry, append_sync, export
        from cloud_core.servicer import count_records

        db = _db(args)
        content = export(db, since, until, args.format)
        count = count_records(content, args.format)
        append_sync(db, AuditEntry(action="audit.export", operator_id=f"local:{getpass.getuser()}",
                                   period_start=since, period_end=until,
                                   details={"format": args.format, "records": count}))
        _emit(args, content.encode(), count)
        return EXIT_OK

    from protos.safetynet.v1 import core_pb2, core_pb2_grpc

    request = core_pb2.ExportAuditRequest(format=args.format)
    if since:
        request.since.FromDatetime(since)
    if until:
        request.until.FromDatetime(until)

    async def body(channel: grpc.aio.Channel, metadata: Any) -> int:
        response = await core_pb2_grpc.AuditServiceStub(channel).Export(request, metadata=metadata,
                                                                         timeout=120)
        _emit(args, response.content, response.records)
        return EXIT_OK

    return _call(args, body)


def _emit(args: argparse.Namespace, content: bytes, count: int) -> None:
    if args.out:
        Path(args.out).write_bytes(content)
        print(f"{count} records written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(content)


# --- parser -------------------------------------------------------------------------------

def add_access_parsers(sub: Any) -> None:
    def core_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--core", metavar="HOST:PORT",
                       help=f"core address (default $SAFETYNET_CORE or {DEFAULT_CORE})")
        p.add_argument("--token-file", metavar="FILE", help="operator token (default $SAFETYNET_TOKEN)")
        p.add_argument("--json", action="store_true", help="print JSON")

    def db_flag(p: argparse.ArgumentParser, audit: bool = False) -> None:
        if audit:
            p.add_argument("--db", default=DEFAULT_AUDIT_DB, metavar="FILE",
                           help=f"the core's audit database (default {DEFAULT_AUDIT_DB})")
        else:
            p.add_argument("--db", default=DEFAULT_DB, metavar="FILE",
                           help=f"the core's database file (default {DEFAULT_DB}; operator "
                                f"changes are recorded in {DEFAULT_AUDIT_DB} beside it)")

    p = sub.add_parser("operator", help="add, list and disable agency operators",
                       description="Manage operators on the core's database (run on the core host).")
    ops = p.add_subparsers(dest="operator_command", metavar="ACTION", required=True)
    q = ops.add_parser("add", help="add an operator and print their token once",
                       description="Add an operator. The token is shown once (or written to "
                                   "--token-out with mode 0600) and stored only as a hash.")
    q.add_argument("name", metavar="NAME", help="operator id (lowercase letters, digits, . _ -)")
    q.add_argument("--agency", required=True,
                   help="police-112, fire-119, disaster-room, vulnerable-support or district:<id>")
    q.add_argument("--role", default="operator",
                   choices=["operator", "supervisor", "auditor", "admin"])
    q.add_argument("--token-out", metavar="FILE", help="write the token to FILE (0600) instead")
    q.add_argument("--policy", metavar="FILE", help="policy file (default: the shipped policy)")
    db_flag(q)
    q.set_defaults(func=cmd_operator_add)
    q = ops.add_parser("list", help="list operators", description="List operators.")
    q.add_argument("--json", action="store_true")
    db_flag(q)
    q.set_defaults(func=cmd_operator_list)
    q = ops.add_parser("disable", help="disable an operator (their sessions end)",
                       description="Disable an operator: their token stops working at once and "
                                   "the core ends their live sessions within seconds.")
    q.add_argument("name", metavar="NAME")
    db_flag(q)
    q.set_defaults(func=cmd_operator_disable)

    p = sub.add_parser("incident", help="report, close and list incidents",
                       description="Report an incident (opens its grant), close it, list them.")
    inc = p.add_subparsers(dest="incident_command", metavar="ACTION", required=True)
    q = inc.add_parser("report", help="report an incident and list the cameras it opens",
                       description="Report an incident: its type decides the service, the agencies "
                                   "admitted, the radius and the time box (see the policy file).")
    q.add_argument("--type", required=True, help="incident type, e.g. robbery, fire, flood, wearable-sos")
    q.add_argument("--at", required=True, metavar="LAT,LON", help="where it happened")
    q.add_argument("--radius", type=float, metavar="METRES", help="radius (default: the service's)")
    q.add_argument("--ref", help="the 112/119 case number")
    q.add_argument("--legal-basis", help="legal basis (default: the service's)")
    q.add_argument("--service", help="service, when the type serves several (e.g. 112-dispatch)")
    q.add_argument("--occurred-at", metavar="TIME", help="when it happened (default now)")
    core_flags(q)
    q.set_defaults(func=cmd_incident_report)
    q = inc.add_parser("close", help="close an incident (its sessions end)",
                       description="Close an incident: every session it backs ends within seconds.")
    q.add_argument("incident_id", metavar="INCIDENT_ID")
    q.add_argument("--reason", required=True)
    core_flags(q)
    q.set_defaults(func=cmd_incident_close)
    q = inc.add_parser("list", help="list incidents visible to you", description="List incidents.")
    q.add_argument("--all", action="store_true", help="include closed and expired incidents")
    core_flags(q)
    q.set_defaults(func=cmd_incident_list)

    p = sub.add_parser("breakglass", help="a supervisor's emergency access, and its review",
                       description="Break-glass: a supervisor's access outside the policy, with a "
                                   "written reason, at most 30 minutes, recorded as START and STOP.")
    bg = p.add_subparsers(dest="breakglass_command", metavar="ACTION", required=True)
    q = bg.add_parser("start", help="open a break-glass window", description="Open a window.")
    q.add_argument("--camera", action="append", default=[], metavar="CAMERA_ID")
    q.add_argument("--district", action="append", default=[], metavar="DISTRICT_ID")
    q.add_argument("--reason", required=True, help="why, in words (recorded)")
    q.add_argument("--minutes", type=int, default=30, help="at most 30 (default 30)")
    core_flags(q)
    q.set_defaults(func=cmd_breakglass_start)
    q = bg.add_parser("stop", help="close a break-glass window", description="Close a window.")
    q.add_argument("breakglass_id", metavar="BREAKGLASS_ID")
    core_flags(q)
    q.set_defaults(func=cmd_breakglass_stop)
    q = bg.add_parser("review", help="the review report of every START/STOP pair",
                      description="List every break-glass window with its START and STOP records.")
    q.add_argument("--since", metavar="TIME")
    q.add_argument("--until", metavar="TIME")
    q.add_argument("--json", action="store_true")
    db_flag(q, audit=True)
    q.set_defaults(func=cmd_breakglass_review)

    p = sub.add_parser("audit", help="verify and export the audit log",
                       description="The tamper-evident audit log: verify its chain, export it.")
    au = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    q = au.add_parser("verify", help="check the hash chain and signed checkpoints (offline)",
                      description="Verify the audit chain of a core database (a copy will do; the "
                                  "core need not run). Exit 0 and OK when it holds, 1 naming the "
                                  "first broken record otherwise.")
    db_flag(q, audit=True)
    q.add_argument("--public-key", metavar="FILE",
                   help="the core's trusted public key (default: grant-signing.pub beside the db)")
    q.set_defaults(func=cmd_audit_verify)
    q = au.add_parser("export", help="export records for a period (CSV or JSON)",
                      description="Export audit records, for the monthly review. Through the core "
                                  "with an auditor's token, or from a database file with --db.")
    q.add_argument("--since", metavar="TIME")
    q.add_argument("--until", metavar="TIME")
    q.add_argument("--format", choices=["csv", "json"], default="csv")
    q.add_argument("--out", metavar="FILE", help="write to FILE instead of standard output")
    q.add_argument("--db", metavar="FILE", help="export from this audit database instead of the core")
    q.add_argument("--core", metavar="HOST:PORT",
                   help=f"core address (default $SAFETYNET_CORE or {DEFAULT_CORE})")
    q.add_argument("--token-file", metavar="FILE", help="auditor token (default $SAFETYNET_TOKEN)")
    q.set_defaults(func=cmd_audit_export)
