"""``safetynet sim``: stand-ins for what a pilot does not have yet (agent configs for the pilot
districts, synthetic cameras served as real RTSP)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from safetynet.commands.arguments import Subcommands, host_port
from safetynet.commands.exceptions import EXIT_FAILED, EXIT_OK, UserError


def register(subcommands: Subcommands) -> None:
    """Add ``safetynet sim districts|cameras``."""
    p = subcommands.add_parser("sim", help="simulators: pilot districts, RTSP cameras",
                               description="Stand-ins for what a pilot does not have yet.")
    sim = p.add_subparsers(dest="sim_command", metavar="WHAT", required=True)
    _register_districts(sim)
    q = sim.add_parser("cameras", help="serve synthetic cameras as real RTSP on loopback",
                       description="Serve synthetic cameras as real RTSP streams on loopback and "
                                   "print 'CAMERA_ID rtsp://…' per camera: the pilot districts' "
                                   "cameras unless told otherwise. Options: --gop SECONDS "
                                   "--fps N --size WxH --bitrate KBPS --port N --codec C "
                                   "--cameras ID,… | --count N | --district ID "
                                   "--credentials USER:PASS --fault-at-start CAMERA=FAULT.",
                       add_help=False)
    q.set_defaults(func=cmd_sim_cameras, passthrough=True)


def _register_districts(sim: Subcommands) -> None:
    q = sim.add_parser("districts", help="write agent configs for the two pilot districts",
                       description="Write one agent config per pilot district (Gangnam-gu, Mapo-gu) "
                                   "with about 20 synthetic cameras each.")
    q.add_argument("--out", metavar="DIR", required=True, help="folder to write the configs into")
    q.add_argument("--broker", metavar="HOST:PORT", default="127.0.0.1:1883", help="MQTT broker")
    q.add_argument("--source", default="sim:?size=640x360&fps=15&gop=1",
                   help="camera source for every camera (default: synthetic 640x360, 15 fps, 1 s GOP)")
    q.add_argument("--advertise", action="append", default=[], metavar="ADDR",
                   help="ICE host address to advertise (repeatable; default 127.0.0.1)")
    q.add_argument("--sources", metavar="FILE",
                   help="per-camera sources: 'CAMERA_ID URL' lines, e.g. the output of "
                        "'safetynet sim cameras' (cameras not listed keep --source)")
    q.add_argument("--grant-key", metavar="FILE",
                   help="the core's grant public key (grant-signing.pub beside its database)")
    q.set_defaults(func=cmd_sim_districts)


def cmd_sim_districts(args: argparse.Namespace) -> int:
    """Write the pilot districts' agent configs and print their paths."""
    from simulators.agent_configs import write_pilot_configs

    host, port = host_port(args.broker, "--broker")
    extra: dict[str, Any] = {}
    if args.sources:
        from simulators.agent_configs import read_camera_urls

        try:
            extra["sources"] = read_camera_urls(Path(args.sources).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"--sources {args.sources}: {exc}") from exc
    try:
        written = write_pilot_configs(Path(args.out), broker_host=host, broker_port=port,
                                      source=args.source, advertise=tuple(args.advertise), **extra,
                                      grant_public_key=Path(args.grant_key).resolve()
                                      if args.grant_key else None)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    for path in written:
        print(path)
    return EXIT_OK


def cmd_sim_cameras(args: argparse.Namespace) -> int:
    """Hand the rest of the command line to the RTSP camera simulator."""
    try:
        from simulators import rtsp_launcher
    except ImportError as exc:
        raise UserError(f"RTSP camera simulator unavailable: {exc}", EXIT_FAILED) from exc
    return int(rtsp_launcher.main(args.rest) or 0)  # it parses (and explains) its own options
