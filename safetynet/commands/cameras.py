"""``safetynet cameras``: list the registry's cameras, filtered, nearest first with ``--near``."""

from __future__ import annotations

import argparse
import asyncio
import json

from safetynet.commands.arguments import Subcommands
from safetynet.commands.core_connection import (
    add_ca_flag,
    add_core_flag,
    add_token_flag,
    ca_file,
    camera_service,
    core_address,
    operator_token,
)
from safetynet.commands.exceptions import EXIT_FAILED, EXIT_OK, UserError
from safetynet.commands.run_loop import run_until_signalled


def register(subcommands: Subcommands) -> None:
    """Add ``safetynet cameras``."""
    p = subcommands.add_parser(
        "cameras", help="list the registry's cameras",
        description="List cameras known to the core, filtered, nearest first with --near.")
    add_core_flag(p)
    p.add_argument("--district", help="only this district")
    p.add_argument("--status", choices=["online", "offline"], help="only cameras in this state")
    p.add_argument("--near", metavar="LAT,LON,RADIUS_M", help="within RADIUS_M metres, nearest first")
    p.add_argument("--limit", type=int, default=0, help="at most this many")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_token_flag(p)
    add_ca_flag(p)
    p.set_defaults(func=cmd_cameras)


def cmd_cameras(args: argparse.Namespace) -> int:
    """Ask the core for its cameras and print one line (or one JSON object) per camera."""
    import grpc

    from protos.safetynet.v1 import core_pb2, mqtt_pb2
    from viewer.client import call_metadata, open_channel

    core = core_address(args)
    ca = ca_file(args, core)
    request = core_pb2.ListCamerasRequest(district_id=args.district or "", limit=args.limit)
    if args.status:
        request.status = mqtt_pb2.CAMERA_STATE_ONLINE if args.status == "online" else mqtt_pb2.CAMERA_STATE_OFFLINE
    if args.near:
        try:
            lat, lon, radius = (float(x) for x in args.near.split(","))
        except ValueError as exc:
            raise UserError(f"--near must be LAT,LON,RADIUS_M, got {args.near!r}") from exc
        request.near.point.lat, request.near.point.lon, request.near.radius_m = lat, lon, radius

    async def body(stop: asyncio.Event) -> int:
        async with open_channel(core, ca) as channel:
            try:
                response = await camera_service(channel).ListCameras(
                    request, metadata=call_metadata(operator_token(args)), timeout=10)
            except grpc.aio.AioRpcError as exc:
                raise UserError(f"cannot list cameras: {exc.details()} ({exc.code().name})",
                                EXIT_FAILED) from exc
        rows = [{
            "camera_id": c.camera_id, "district_id": c.district_id, "name": c.name,
            "lat": c.location.lat, "lon": c.location.lon,
            "status": mqtt_pb2.CameraState.Name(c.status).removeprefix("CAMERA_STATE_").lower(),
            **({"distance_m": round(c.distance_m, 1)} if args.near else {}),
        } for c in response.cameras]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                distance = f"{row['distance_m']:>8.0f} m  " if args.near else ""
                print(f"{row['camera_id']:<16} {row['status']:<8} {distance}{row['name']}")
        return EXIT_OK

    return run_until_signalled(body)
