"""``safetynet incident report|move|link|handoff|close|list``: incidents, through the running
core with an operator's token. Reporting one opens its grant: the cameras near it, for the
agencies it admits; moving it makes the grant follow; a hand-off opens a linked incident."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

import grpc

from safetynet.commands.arguments import Subcommands, moment
from safetynet.commands.core_connection import (
    Metadata,
    add_core_call_flags,
    call_core,
    incident_service,
)
from safetynet.commands.exceptions import EXIT_OK, UserError


def register(subcommands: Subcommands) -> None:
    """Add ``safetynet incident report|move|link|handoff|close|list``."""
    p = subcommands.add_parser(
        "incident", help="report, move, link, close and list incidents",
        description="Report an incident (opens its grant), move it (the grant follows), link "
                    "or hand it off, close it, list them.")
    inc = p.add_subparsers(dest="incident_command", metavar="ACTION", required=True)
    _register_report(inc)
    _register_moves(inc)
    q = inc.add_parser("close", help="close an incident (its sessions end)",
                       description="Close an incident: every session it backs ends within seconds.")
    q.add_argument("incident_id", metavar="INCIDENT_ID")
    q.add_argument("--reason", required=True)
    add_core_call_flags(q)
    q.set_defaults(func=cmd_incident_close)
    q = inc.add_parser("list", help="list incidents visible to you", description="List incidents.")
    q.add_argument("--all", action="store_true", help="include closed and expired incidents")
    add_core_call_flags(q)
    q.set_defaults(func=cmd_incident_list)


def _register_report(inc: Subcommands) -> None:
    q = inc.add_parser("report", help="report an incident and list the cameras it opens",
                       description="Report an incident: its type decides the service, the agencies "
                                   "admitted, the radius and the time box (see the policy file).")
    q.add_argument("--type", required=True, help="incident type, e.g. robbery, fire, flood, wearable-sos")
    q.add_argument("--at", required=True, metavar="LAT,LON", help="where it happened")
    q.add_argument("--radius", type=float, metavar="METRES",
                   help="radius (default: the service's; beyond its maximum: refused)")
    q.add_argument("--clamp", action="store_true",
                   help="a radius beyond the service's maximum gets the maximum instead")
    q.add_argument("--relay", action="store_true",
                   help="serve the incident's viewers through a cloud relay (one stream per "
                        "camera leaves the district; docs/cloud-relay.md)")
    q.add_argument("--ref", help="the 112/119 case number (reporting it again returns the same "
                                 "incident)")
    q.add_argument("--legal-basis", help="legal basis (default: the service's)")
    q.add_argument("--service", help="service, when the type serves several: its id or a "
                                     "short name that fits one (e.g. 112-dispatch for "
                                     "112-emergency-dispatch)")
    q.add_argument("--occurred-at", metavar="TIME", help="when it happened (default now)")
    add_core_call_flags(q)
    q.set_defaults(func=cmd_incident_report)


def _register_moves(inc: Subcommands) -> None:
    q = inc.add_parser("move", help="a new position: the grant follows it",
                       description="Report where a moving incident is now (a fleeing suspect, a "
                                   "wearable's wearer). The grant follows, across districts; "
                                   "sessions on cameras out of reach end.")
    q.add_argument("incident_id", metavar="INCIDENT_ID")
    q.add_argument("--at", required=True, metavar="LAT,LON", help="where it is now")
    q.add_argument("--time", metavar="TIME", help="when it was there (default now)")
    q.add_argument("--source", choices=("operator", "cad", "wearable"), default="operator")
    add_core_call_flags(q)
    q.set_defaults(func=cmd_incident_move)
    q = inc.add_parser("link", help="link two incidents (both agencies see both)",
                       description="Link two incidents that belong together.")
    q.add_argument("incident_id", metavar="INCIDENT_ID")
    q.add_argument("other_incident_id", metavar="OTHER_INCIDENT_ID")
    q.add_argument("--reason", required=True)
    add_core_call_flags(q)
    q.set_defaults(func=cmd_incident_link)
    q = inc.add_parser("handoff", help="hand an incident off (e.g. an SOS to 112)",
                       description="Open the linked incident of the service the policy hands "
                                   "this one off to (once; again returns the same one).")
    q.add_argument("incident_id", metavar="INCIDENT_ID")
    q.add_argument("--reason", required=True)
    q.add_argument("--type", help="incident type there (default: the policy's)")
    add_core_call_flags(q)
    q.set_defaults(func=cmd_incident_handoff)


def _point(text: str, flag: str) -> tuple[float, float]:
    try:
        lat, lon = (float(x) for x in text.split(","))
    except ValueError as exc:
        raise UserError(f"{flag} must be LAT,LON, got {text!r}") from exc
    return lat, lon


def _incident_row(incident: Any) -> dict[str, Any]:
    return {
        "incident_id": incident.incident_id, "type": incident.incident_type,
        "service": incident.service, "lat": incident.location.lat, "lon": incident.location.lon,
        "radius_m": incident.radius_m, "agencies": list(incident.agencies), "open": incident.open,
        "opened_at": incident.opened_at.ToJsonString(),
        "expires_at": incident.expires_at.ToJsonString(),
        "closed_at": incident.closed_at.ToJsonString() if incident.HasField("closed_at") else None,
        "legal_basis": incident.legal_basis, "external_ref": incident.external_ref,
        "trail": [{"lat": p.location.lat, "lon": p.location.lon, "at": p.at.ToJsonString(),
                   "source": p.source} for p in incident.trail],
        "links": [{"incident_id": link.incident_id, "kind": link.kind,
                   "outgoing": link.outgoing, "reason": link.reason} for link in incident.links],
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
        print(json.dumps({**row, "existing": report.existing, "cameras": cameras,
                          "facilities": facilities}, indent=2))
        return
    if report.existing:
        print(f"(already reported as {row['incident_id']}: nothing new was opened)")
    print(f"incident {row['incident_id']}: {row['type']} ({row['service']}) at "
          f"{row['lat']:.5f},{row['lon']:.5f} r={row['radius_m']:.0f} m, "
          f"{'open until ' + row['expires_at'] if row['open'] else 'closed'}")
    print(f"  agencies: {', '.join(row['agencies'])}; legal basis: {row['legal_basis']}")
    if len(row["trail"]) > 1:
        print(f"  trail: {len(row['trail'])} positions, latest {row['trail'][-1]['at']}")
    for link in row["links"]:
        print(f"  {link['kind']} {'to' if link['outgoing'] else 'from'} {link['incident_id']}: "
              f"{link['reason']}")
    for camera in cameras:
        print(f"  {camera['camera_id']:<16} {camera['distance_m']:>7.0f} m  {camera['status']:<8} "
              f"{camera['name']}")
    for facility in facilities:
        print(f"  [{facility['kind']}] {facility['name']} {facility['distance_m']:.0f} m "
              f"({facility['detail']})")


def cmd_incident_report(args: argparse.Namespace) -> int:
    """Report an incident; print it with the cameras and facilities around it."""
    from protos.safetynet.v1 import core_pb2

    lat, lon = _point(args.at, "--at")
    request = core_pb2.ReportIncidentRequest(
        incident_type=args.type, location=core_pb2.GeoPoint(lat=lat, lon=lon),
        radius_m=args.radius or 0, external_ref=args.ref or "", legal_basis=args.legal_basis or "",
        service=args.service or "", clamp_to_max=args.clamp, relay=args.relay)
    request.occurred_at.FromDatetime(moment(args.occurred_at, "--occurred-at") if args.occurred_at
                                     else datetime.now(UTC))

    async def body(channel: grpc.aio.Channel, metadata: Metadata) -> int:
        report = await incident_service(channel).Report(request, metadata=metadata, timeout=10)
        _print_report(report, args.json)
        return EXIT_OK

    return call_core(args, body)


def cmd_incident_move(args: argparse.Namespace) -> int:
    """A new position; print the incident with the cameras its grant reaches now."""
    from protos.safetynet.v1 import core_pb2

    lat, lon = _point(args.at, "--at")
    request = core_pb2.MoveIncidentRequest(incident_id=args.incident_id, source=args.source,
                                           location=core_pb2.GeoPoint(lat=lat, lon=lon))
    if args.time:
        request.at.FromDatetime(moment(args.time, "--time"))

    async def body(channel: grpc.aio.Channel, metadata: Metadata) -> int:
        report = await incident_service(channel).Move(request, metadata=metadata, timeout=10)
        _print_report(report, args.json)
        return EXIT_OK

    return call_core(args, body)


def cmd_incident_link(args: argparse.Namespace) -> int:
    """Link two incidents."""
    from protos.safetynet.v1 import core_pb2

    async def body(channel: grpc.aio.Channel, metadata: Metadata) -> int:
        response = await incident_service(channel).Link(core_pb2.LinkIncidentsRequest(
            incident_id=args.incident_id, other_incident_id=args.other_incident_id,
            reason=args.reason), metadata=metadata, timeout=10)
        print(json.dumps([_incident_row(response.incident), _incident_row(response.other)],
                         indent=2) if args.json else
              f"incident {args.incident_id} linked to {args.other_incident_id}")
        return EXIT_OK

    return call_core(args, body)


def cmd_incident_handoff(args: argparse.Namespace) -> int:
    """Hand an incident off; print the linked incident it opened."""
    from protos.safetynet.v1 import core_pb2

    async def body(channel: grpc.aio.Channel, metadata: Metadata) -> int:
        report = await incident_service(channel).HandOff(core_pb2.HandOffIncidentRequest(
            incident_id=args.incident_id, reason=args.reason, incident_type=args.type or ""),
            metadata=metadata, timeout=10)
        _print_report(report, args.json)
        return EXIT_OK

    return call_core(args, body)


def cmd_incident_close(args: argparse.Namespace) -> int:
    """Close an incident: the sessions it backs end."""
    from protos.safetynet.v1 import core_pb2

    async def body(channel: grpc.aio.Channel, metadata: Metadata) -> int:
        incident = await incident_service(channel).Close(
            core_pb2.CloseIncidentRequest(incident_id=args.incident_id, reason=args.reason),
            metadata=metadata, timeout=15)
        print(json.dumps(_incident_row(incident), indent=2) if args.json else
              f"incident {incident.incident_id} closed: {args.reason}")
        return EXIT_OK

    return call_core(args, body)


def cmd_incident_list(args: argparse.Namespace) -> int:
    """One line (or JSON object) per incident the operator may see."""
    from protos.safetynet.v1 import core_pb2

    async def body(channel: grpc.aio.Channel, metadata: Metadata) -> int:
        response = await incident_service(channel).List(
            core_pb2.ListIncidentsRequest(include_closed=args.all), metadata=metadata, timeout=10)
        rows = [_incident_row(i) for i in response.incidents]
        if args.json:
            print(json.dumps(rows, indent=2))
        for row in [] if args.json else rows:
            print(f"{row['incident_id']:<28} {row['type']:<18} {'open' if row['open'] else 'closed':<6} "
                  f"{row['lat']:.5f},{row['lon']:.5f} r={row['radius_m']:.0f} m")
        return EXIT_OK

    return call_core(args, body)
