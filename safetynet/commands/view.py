"""``safetynet view``: watch one camera through the core and report what arrived."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.loopback import is_loopback
from safetynet.commands.arguments import Subcommands
from safetynet.commands.core_connection import (
    add_ca_flag,
    add_core_flag,
    add_token_flag,
    ca_file,
    core_address,
    operator_token,
)
from safetynet.commands.exceptions import EXIT_FAILED, EXIT_OK, UserError
from safetynet.commands.run_loop import run_until_signalled

if TYPE_CHECKING:
    from runtime.webrtc import WebRtcSettings


def register(subcommands: Subcommands) -> None:
    """Add ``safetynet view CAMERA_ID``."""
    p = subcommands.add_parser(
        "view", help="watch a camera through the core and report what arrived",
        description="Open a session through the core, decode the camera's video, and "
                    "report time to first frame, frames and resolution.")
    p.add_argument("camera_id", metavar="CAMERA_ID")
    add_core_flag(p)
    p.add_argument("--seconds", type=float, default=3.0, help="how long to watch (default 3)")
    p.add_argument("--snapshot", metavar="FILE.png", help="save the last decoded frame as an image")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_token_flag(p)
    add_ca_flag(p)
    p.add_argument("--advertise", action="append", default=[], metavar="ADDR",
                   help="ICE host address to advertise (repeatable; default loopback for a local core)")
    p.add_argument("--incident", metavar="INCIDENT_ID", default="",
                   help="the incident that justifies the view (none: your district's standing access)")
    p.add_argument("--breakglass", metavar="BREAKGLASS_ID", default="",
                   help="a supervisor's break-glass window")
    p.set_defaults(func=cmd_view)


def _viewer_webrtc(args: argparse.Namespace, core: str) -> WebRtcSettings:
    from runtime.webrtc import WebRtcSettings

    advertise = args.advertise or [a for a in os.environ.get("SAFETYNET_ADVERTISE", "").split(",") if a]
    try:
        if advertise:
            return WebRtcSettings(advertise=tuple(advertise))
        # Talking to a core on this machine: stay on loopback. Otherwise every interface.
        return WebRtcSettings.loopback() if is_loopback(core.rpartition(":")[0]) else WebRtcSettings()
    except ValueError as exc:
        raise UserError(str(exc)) from exc


def cmd_view(args: argparse.Namespace) -> int:
    """Watch ``CAMERA_ID`` for ``--seconds`` and print the report (or why the core refused)."""
    from viewer.client import ViewError, watch

    core = core_address(args)
    ca = ca_file(args, core)
    webrtc = _viewer_webrtc(args, core)
    token = operator_token(args)
    snapshot = Path(args.snapshot) if args.snapshot else None
    if args.seconds < 0:
        raise UserError("--seconds must not be negative")

    async def body(stop: asyncio.Event) -> int:
        try:
            report = await watch(core, args.camera_id, seconds=args.seconds, webrtc=webrtc,
                                 token=token, snapshot=snapshot, ca_file=ca,
                                 incident_id=args.incident, breakglass_id=args.breakglass)
        except ViewError as exc:
            if args.json:
                print(json.dumps({"camera_id": args.camera_id, "error": exc.code,
                                  "message": exc.message}))
            raise UserError(f"cannot view {args.camera_id}: {exc.message} ({exc.code})",
                            EXIT_FAILED) from exc
        if args.json:
            print(json.dumps(report.as_dict(), indent=2))
        else:
            print(f"camera {report.camera_id} ({report.district_id}): first frame after "
                  f"{report.time_to_first_frame_ms:.0f} ms, {report.frames} frames of "
                  f"{report.width}x{report.height} in {report.seconds:.1f} s"
                  + (f", snapshot {report.snapshot}" if report.snapshot else ""))
            if report.ended_reason:
                print(f"session ended: {report.ended_reason}")
        return EXIT_OK

    return run_until_signalled(body)
