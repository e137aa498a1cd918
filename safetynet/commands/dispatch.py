"""``safetynet dispatch assign|still|handoff|show|list|recall``: 112 dispatch to officers in the
field, through the running core's ``DispatchService`` with the 112 room's token.

The room assigns field officers (role ``field``) to an incident, pushes them stills (a JPEG of the
camera's latest key frame, taken at the district's agent; its hash goes on the audit record) and
hands them live cameras; officers see them on their phones (``/officer``) as they arrive.
Recalling an officer ends their part at once.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import grpc

from safetynet.commands.arguments import Subcommands
from safetynet.commands.core_connection import (
    Metadata,
    add_core_call_flags,
    call_core,
    incident_service,
)
from safetynet.commands.exceptions import EXIT_FAILED, EXIT_OK, UserError

TIMEOUT = 15.0   # a still waits for the agent's JPEG


def register(subcommands: Subcommands) -> None:
    """Add ``safetynet dispatch assign|still|handoff|show|list|recall``."""
    p = subcommands.add_parser(
        "dispatch", help="112 dispatch: assign field officers, push them stills and cameras",
        description="112 dispatch: assign field officers to an incident, push them stills taken "
                    "at the district's agent and hand them live cameras; recall them.")
    dis = p.add_subparsers(dest="dispatch_command", metavar="ACTION", required=True)
    q = dis.add_parser("assign", help="dispatch field officers to an incident",
                       description="Assign field officers (role field, of an agency the "
                                   "incident admits) to an open incident.")
    q.add_argument("incident_id", metavar="INCIDENT_ID")
    q.add_argument("--officer", action="append", required=True, metavar="OFFICER_ID",
                   help="the officer's operator id (repeatable)")
    add_core_call_flags(q)
    q.set_defaults(func=cmd_assign)
    q = dis.add_parser("still", help="push a still of a camera to the dispatched officers",
                       description="Take a still of a camera in the incident's grant at its "
                                   "district's agent and push it to the assigned officers.")
    q.add_argument("incident_id", metavar="INCIDENT_ID")
    q.add_argument("--camera", required=True, metavar="CAMERA_ID")
    add_core_call_flags(q)
    q.set_defaults(func=cmd_still)
    q = dis.add_parser("handoff", help="hand a live camera off to the dispatched officers",
                       description="Let the assigned officers open a camera of the incident's "
                                   "grant live, in one tap on their phones.")
    q.add_argument("incident_id", metavar="INCIDENT_ID")
    q.add_argument("--camera", required=True, metavar="CAMERA_ID")
    add_core_call_flags(q)
    q.set_defaults(func=cmd_handoff)
    _register_views(dis)


def _register_views(dis: Subcommands) -> None:
    q = dis.add_parser("show", help="who is dispatched to an incident and what they got",
                       description="The officers assigned to an incident and every push.")
    q.add_argument("incident_id", metavar="INCIDENT_ID")
    add_core_call_flags(q)
    q.set_defaults(func=cmd_show)
    q = dis.add_parser("list", help="dispatches of the incidents you may see",
                       description="Every visible incident with officers assigned or pushes "
                                   "made: its officers and how many stills and cameras.")
    q.add_argument("--all", action="store_true", help="include closed and expired incidents")
    add_core_call_flags(q)
    q.set_defaults(func=cmd_list)
    q = dis.add_parser("recall", help="end officers' part in an incident",
                       description="Unassign officers: their view of the incident, its pushes "
                                   "and their live sessions end at once.")
    q.add_argument("incident_id", metavar="INCIDENT_ID")
    who = q.add_mutually_exclusive_group(required=True)
    who.add_argument("--officer", action="append", metavar="OFFICER_ID",
                     help="the officer's operator id (repeatable)")
    who.add_argument("--all", action="store_true", help="every officer assigned")
    add_core_call_flags(q)
    q.set_defaults(func=cmd_recall)


def dispatch_service(channel: grpc.aio.Channel) -> Any:
    """A ``DispatchService`` stub on ``channel`` (untyped generated code, handed out as Any)."""
    from protos.safetynet.v1 import core_pb2_grpc

    return core_pb2_grpc.DispatchServiceStub(channel)


def _push_row(push: Any) -> dict[str, Any]:
    return {"push_id": push.push_id, "kind": push.kind, "camera_id": push.camera_id,
            "at": push.at.ToJsonString(), "sha256": push.sha256, "bytes": push.bytes,
            "pushed_by": push.pushed_by}


def _state_row(state: Any) -> dict[str, Any]:
    return {"incident_id": state.incident_id, "officers": list(state.officer_ids),
            "pushes": [_push_row(p) for p in state.pushes]}


def _print_state(row: dict[str, Any]) -> None:
    officers = ", ".join(row["officers"]) or "none"
    print(f"incident {row['incident_id']}: officers dispatched: {officers}")
    for push in row["pushes"]:
        what = (f"still {push['bytes']} bytes sha256 {push['sha256']}" if push["kind"] == "still"
                else "camera handed off")
        print(f"  {push['at']}  {push['push_id']}  {push['camera_id']:<16} {what} "
              f"(by {push['pushed_by']})")


def _officers(ids: list[str]) -> list[str]:
    cleaned = [i.strip() for i in ids]
    if any(not i for i in cleaned):
        raise UserError("--officer must name an officer's operator id")
    if len(set(cleaned)) != len(cleaned):
        raise UserError("--officer names the same officer twice")
    return cleaned


def cmd_assign(args: argparse.Namespace) -> int:
    """Assign each officer; print who is dispatched now."""
    from protos.safetynet.v1 import core_pb2

    officers = _officers(args.officer)

    async def body(channel: grpc.aio.Channel, metadata: Metadata) -> int:
        stub = dispatch_service(channel)
        state = None
        for officer_id in officers:
            state = await stub.Assign(core_pb2.AssignOfficerRequest(
                incident_id=args.incident_id, officer_id=officer_id),
                metadata=metadata, timeout=TIMEOUT)
        assert state is not None
        row = _state_row(state)
        if args.json:
            print(json.dumps(row, indent=2))
        else:
            print(f"dispatched {', '.join(officers)} to {args.incident_id}; officers now: "
                  f"{', '.join(row['officers'])}")
        return EXIT_OK

    return call_core(args, body)


def _cmd_push(args: argparse.Namespace, rpc: str) -> int:
    from protos.safetynet.v1 import core_pb2

    request_type = core_pb2.PushStillRequest if rpc == "PushStill" else core_pb2.HandOffCameraRequest

    async def body(channel: grpc.aio.Channel, metadata: Metadata) -> int:
        stub = dispatch_service(channel)
        push = await getattr(stub, rpc)(request_type(incident_id=args.incident_id,
                                                     camera_id=args.camera),
                                        metadata=metadata, timeout=TIMEOUT)
        state = await stub.Get(core_pb2.GetDispatchRequest(incident_id=args.incident_id),
                               metadata=metadata, timeout=TIMEOUT)
        row = {**_push_row(push), "officers": list(state.officer_ids)}
        if args.json:
            print(json.dumps(row, indent=2))
            return EXIT_OK
        what = (f"still of {push.camera_id} ({push.bytes} bytes, sha256 {push.sha256})"
                if push.kind == "still" else f"camera {push.camera_id} handed off")
        print(f"{push.push_id}: {what}")
        print(f"  to {', '.join(row['officers'])}" if row["officers"] else
              "  no officer is dispatched yet: officers assigned later see it too")
        return EXIT_OK

    return call_core(args, body)


def cmd_still(args: argparse.Namespace) -> int:
    """Push a still taken at the camera's agent."""
    return _cmd_push(args, "PushStill")


def cmd_handoff(args: argparse.Namespace) -> int:
    """Hand a live camera off to the assigned officers."""
    return _cmd_push(args, "HandOffCamera")


def cmd_show(args: argparse.Namespace) -> int:
    """The officers and pushes of one incident."""
    from protos.safetynet.v1 import core_pb2

    async def body(channel: grpc.aio.Channel, metadata: Metadata) -> int:
        state = await dispatch_service(channel).Get(
            core_pb2.GetDispatchRequest(incident_id=args.incident_id),
            metadata=metadata, timeout=TIMEOUT)
        row = _state_row(state)
        if args.json:
            print(json.dumps(row, indent=2))
        else:
            _print_state(row)
        return EXIT_OK

    return call_core(args, body)


def cmd_list(args: argparse.Namespace) -> int:
    """One line per visible incident that has a dispatch."""
    from protos.safetynet.v1 import core_pb2

    async def body(channel: grpc.aio.Channel, metadata: Metadata) -> int:
        incidents = await incident_service(channel).List(
            core_pb2.ListIncidentsRequest(include_closed=args.all), metadata=metadata,
            timeout=TIMEOUT)
        stub = dispatch_service(channel)
        rows = []
        for incident in incidents.incidents:
            state = await stub.Get(core_pb2.GetDispatchRequest(incident_id=incident.incident_id),
                                   metadata=metadata, timeout=TIMEOUT)
            if state.officer_ids or state.pushes:
                rows.append({**_state_row(state), "type": incident.incident_type,
                             "open": incident.open})
        if args.json:
            print(json.dumps(rows, indent=2))
            return EXIT_OK
        if not rows:
            print("no dispatch on the incidents you may see")
        for row in rows:
            stills = sum(1 for p in row["pushes"] if p["kind"] == "still")
            print(f"{row['incident_id']:<28} {row['type']:<16} "
                  f"{'open' if row['open'] else 'closed':<6} "
                  f"officers: {', '.join(row['officers']) or 'none'}; {stills} stills, "
                  f"{len(row['pushes']) - stills} cameras")
        return EXIT_OK

    return call_core(args, body)


def cmd_recall(args: argparse.Namespace) -> int:
    """Unassign the named officers (or all); print who is left."""
    from protos.safetynet.v1 import core_pb2

    named = _officers(args.officer) if args.officer else []

    async def body(channel: grpc.aio.Channel, metadata: Metadata) -> int:
        stub = dispatch_service(channel)
        state = await stub.Get(core_pb2.GetDispatchRequest(incident_id=args.incident_id),
                               metadata=metadata, timeout=TIMEOUT)
        officers = named or list(state.officer_ids)
        if not officers:
            raise UserError(f"no officer is dispatched to {args.incident_id}", EXIT_FAILED)
        for officer_id in officers:
            state = await stub.Unassign(core_pb2.AssignOfficerRequest(
                incident_id=args.incident_id, officer_id=officer_id),
                metadata=metadata, timeout=TIMEOUT)
        row = _state_row(state)
        if args.json:
            print(json.dumps(row, indent=2))
        else:
            print(f"recalled {', '.join(officers)} from {args.incident_id}; officers left: "
                  f"{', '.join(row['officers']) or 'none'}")
        return EXIT_OK

    return call_core(args, body)
