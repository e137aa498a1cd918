"""``safetynet sim``: stand-ins for what a pilot does not have yet (agent configs for the pilot
districts, synthetic cameras served as real RTSP, a carrier's wearable platform)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path
from typing import Any

from safetynet.commands.arguments import Subcommands, host_port
from safetynet.commands.core_connection import add_core_flag, add_token_flag
from safetynet.commands.exceptions import EXIT_FAILED, EXIT_OK, UserError


def register(subcommands: Subcommands) -> None:
    """Add ``safetynet sim districts|cameras|wearables|incidents``."""
    p = subcommands.add_parser("sim", help="simulators: pilot districts, RTSP cameras, wearables",
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
    _register_wearables(sim)
    _register_incidents(sim)


def _register_incidents(sim: Subcommands) -> None:
    q = sim.add_parser("incidents", help="a 112/119/disaster CAD feed against a running core",
                       description="Report incidents at a rate as a CAD system would: case "
                                   "numbers as external refs, some reports retried (the core "
                                   "returns the same incident), a fleeing suspect's moves for "
                                   "112, then close each case.")
    add_core_flag(q)
    add_token_flag(q, "CAD system (role feed or operator)")
    q.add_argument("--service", choices=("112", "119", "disaster"), default="112")
    q.add_argument("--per-minute", type=float, default=6.0, help="reports a minute (6)")
    q.add_argument("--cases", type=int, default=10, help="how many cases to play (10)")
    q.add_argument("--retry-share", type=float, default=0.2, help="share retried (0.2)")
    q.add_argument("--moves", type=int, default=3, help="moves per 112 case (3)")
    q.add_argument("--seed", type=int)
    q.set_defaults(func=cmd_sim_incidents)


def cmd_sim_incidents(args: argparse.Namespace) -> int:
    """Play CAD cases against the core; print what happened as JSON."""
    import json
    from dataclasses import asdict

    from safetynet.commands.core_connection import core_address, operator_token
    from simulators.incident_feed import IncidentFeed, IncidentFeedConfig

    token = operator_token(args)
    if not token:
        raise UserError("a token is needed: --token-file FILE or $SAFETYNET_TOKEN")
    try:
        config = IncidentFeedConfig(core=core_address(args), token=token, service=args.service,
                                    per_minute=args.per_minute, retry_share=args.retry_share,
                                    moves=args.moves, seed=args.seed)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    stats = asyncio.run(IncidentFeed(config).run(args.cases))
    print(json.dumps({k: v for k, v in asdict(stats).items() if k != "incidents"}, indent=2))
    return EXIT_OK if stats.retries_new_incident == 0 else EXIT_FAILED


def _register_wearables(sim: Subcommands) -> None:
    q = sim.add_parser("wearables", help="a carrier's wearable feed against a running core",
                       description="Children and dementia patients walking in the pilot "
                                   "districts: a few SOS presses and safe-zone exits an hour, "
                                   "positions while an alert is open, posted to the core's "
                                   "feed endpoint with a feed client's token (role feed).")
    q.add_argument("--console", metavar="URL", default="http://127.0.0.1:8080",
                   help="the core's console URL (default http://127.0.0.1:8080)")
    q.add_argument("--token-file", metavar="FILE",
                   help="feed client token (default $SAFETYNET_TOKEN)")
    q.add_argument("--subjects", type=int, default=20, help="wearers (default 20)")
    q.add_argument("--sos-per-hour", type=float, default=3.0, help="SOS presses an hour (3)")
    q.add_argument("--exits-per-hour", type=float, default=2.0, help="safe-zone exits an hour (2)")
    q.add_argument("--position-seconds", type=float, default=10.0,
                   help="position interval while an alert is open (10)")
    q.add_argument("--sos-now", type=int, default=0, metavar="N", help="N SOS presses at start")
    q.add_argument("--seconds", type=float, default=0.0, help="run this long (default: until ^C)")
    q.add_argument("--seed", type=int, help="random seed (repeatable runs)")
    q.set_defaults(func=cmd_sim_wearables)


def cmd_sim_wearables(args: argparse.Namespace) -> int:
    """Play the wearable feed until stopped (or for --seconds); print what was sent."""
    from safetynet.commands.core_connection import operator_token
    from safetynet.commands.run_loop import run_until_signalled
    from simulators.wearables import WearableSimConfig, WearableSimulator

    token = operator_token(args)
    if not token:
        raise UserError("a feed client token is needed: --token-file FILE or $SAFETYNET_TOKEN")
    try:
        config = WearableSimConfig(
            core_url=args.console, token=token, subjects=args.subjects,
            sos_per_hour=args.sos_per_hour, exits_per_hour=args.exits_per_hour,
            position_seconds=args.position_seconds, sos_at_start=args.sos_now, seed=args.seed)
    except ValueError as exc:
        raise UserError(str(exc)) from exc

    async def body(stop: asyncio.Event) -> int:
        async with WearableSimulator(config) as simulator:
            play = asyncio.create_task(simulator.run(args.seconds))
            halt = asyncio.create_task(stop.wait())
            await asyncio.wait({play, halt}, return_when=asyncio.FIRST_COMPLETED)
            for task in (play, halt):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            stats = simulator.stats
        print(f"sent {stats.sent} events: {stats.alerts} alerts, {stats.moves} positions, "
              f"{stats.refused} refused, {stats.retries} retried")
        return EXIT_OK

    return run_until_signalled(body)


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
