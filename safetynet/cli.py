"""``safetynet``: the one command line for the core, agents, simulators, the demo and viewers.

Mistakes a user can make (a bad config, an unknown camera, a core that is down) end with one
line naming the problem and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_CORE = "127.0.0.1:50051"


class UserError(Exception):
    """A mistake of the user's: printed as one line, exit code 2 (or ``exit_code``)."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def run_until_signalled(body: Callable[[asyncio.Event], Coroutine[Any, Any, int | None]], *,
                        fast_loop: bool = False) -> int:
    """Run ``body(stop)``; SIGINT/SIGTERM set ``stop`` so it can shut down in order.

    ``fast_loop`` runs it on uvloop when installed (the core: many small gRPC and MQTT calls).
    """

    async def runner() -> int | None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await body(stop)

    loop_factory = None
    if fast_loop:
        try:
            import uvloop
            loop_factory = uvloop.new_event_loop
        except ImportError:
            pass
    with asyncio.Runner(loop_factory=loop_factory) as runner_:
        return runner_.run(runner()) or EXIT_OK


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_port(value: str, what: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UserError(f"{what} must be HOST:PORT, got {value!r}")
    return host, int(port)


# --- core ---------------------------------------------------------------------------------

def cmd_core(args: argparse.Namespace) -> int:
    from cloud_core.config import CoreConfig
    from cloud_core.exceptions import ConfigError
    from cloud_core.server import run_core
    from runtime.logs import configure_logging
    from runtime.mqtt_link import BrokerSettings

    configure_logging(args.log_level)
    try:
        config = CoreConfig.from_toml(Path(args.config)) if args.config else CoreConfig(
            database=Path(args.db).resolve())
    except ConfigError as exc:
        raise UserError(str(exc)) from exc
    overrides: dict[str, Any] = {}
    if args.listen:
        _host_port(args.listen, "--listen")
        overrides["listen"] = args.listen
    if args.http_listen:
        _host_port(args.http_listen, "--http-listen")
        overrides["http_listen"] = args.http_listen
    if args.broker:
        host, port = _host_port(args.broker, "--broker")
        overrides["broker"] = BrokerSettings(host=host, port=port)
    if args.config and args.db:
        overrides["database"] = Path(args.db).resolve()
    if overrides:
        from dataclasses import replace
        config = replace(config, **overrides)
    return run_until_signalled(lambda stop: run_core(config, stop), fast_loop=True)


# --- agent --------------------------------------------------------------------------------

def cmd_agent(args: argparse.Namespace) -> int:
    from edge_agent.agent import run_agent
    from edge_agent.config import AgentConfig
    from edge_agent.exceptions import ConfigError
    from runtime.logs import configure_logging

    if not args.config:
        raise UserError("safetynet agent: --config FILE is required (see --help)")
    configure_logging(args.log_level)
    try:
        config = AgentConfig.from_toml(Path(args.config))
    except ConfigError as exc:
        raise UserError(str(exc)) from exc
    return run_until_signalled(lambda stop: run_agent(config, stop))


# --- sim ----------------------------------------------------------------------------------

def cmd_sim_districts(args: argparse.Namespace) -> int:
    from simulators.agent_configs import write_pilot_configs

    host, port = _host_port(args.broker, "--broker")
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
    try:
        from simulators import rtsp_launcher
    except ImportError as exc:
        raise UserError(f"RTSP camera simulator unavailable: {exc}", EXIT_FAILED) from exc
    return int(rtsp_launcher.main(args.rest) or 0)  # it parses (and explains) its own options


# --- demo ---------------------------------------------------------------------------------

def cmd_demo(args: argparse.Namespace) -> int:
    from runtime.logs import configure_logging
    from safetynet.demo import DemoOptions, run_demo

    configure_logging(args.log_level)
    if args.city:  # the whole city: 25 districts, 68,000 cameras (safetynet/city_demo.py)
        from safetynet.city_demo import CityDemoOptions, run_city_demo
        city = CityDemoOptions(state_dir=Path(args.state_dir).resolve() if args.state_dir else None,
                               core_port=args.port, console_port=args.console_port)
        return run_until_signalled(lambda stop: run_city_demo(city, stop))
    options = DemoOptions(state_dir=Path(args.state_dir).resolve() if args.state_dir else None,
                          cameras=args.cameras,
                          core_port=args.port, console_port=args.console_port,
                          camera_source=args.source,
                          agent_log_level=args.agent_log_level)
    return run_until_signalled(lambda stop: run_demo(options, stop))


# --- view / cameras -----------------------------------------------------------------------

def _core_address(args: argparse.Namespace) -> str:
    address = args.core or os.environ.get("SAFETYNET_CORE") or DEFAULT_CORE
    _host_port(address, "--core")
    return str(address)


def _viewer_webrtc(args: argparse.Namespace, core: str) -> Any:
    from runtime.webrtc import WebRtcSettings

    advertise = args.advertise or [a for a in os.environ.get("SAFETYNET_ADVERTISE", "").split(",") if a]
    try:
        if advertise:
            return WebRtcSettings(advertise=tuple(advertise))
        # Talking to a core on this machine: stay on loopback. Otherwise every interface.
        return WebRtcSettings.loopback() if _loopback(core.rpartition(":")[0]) else WebRtcSettings()
    except ValueError as exc:
        raise UserError(str(exc)) from exc


def _token(args: argparse.Namespace) -> str | None:
    if getattr(args, "token_file", None):
        try:
            return Path(args.token_file).read_text().strip() or None
        except OSError as exc:
            raise UserError(f"cannot read token file {args.token_file}: {exc.strerror}") from exc
    return os.environ.get("SAFETYNET_TOKEN") or None


def _ca_file(args: argparse.Namespace, core: str) -> Path | None:
    """The city CA to check the core's TLS certificate with; plain gRPC only to a loopback core."""
    value = args.ca_file or os.environ.get("SAFETYNET_CA_FILE")
    if not value:
        if not _loopback(core.rpartition(":")[0]):
            raise UserError(f"the core {core} is not on this machine: pass --ca-file CITY_CA.crt "
                            "(or set $SAFETYNET_CA_FILE) to talk TLS; plain gRPC is for loopback only")
        return None
    if not Path(value).is_file():
        raise UserError(f"--ca-file {value}: no such file")
    return Path(value)


def cmd_view(args: argparse.Namespace) -> int:
    from viewer.client import ViewError, watch

    core = _core_address(args)
    ca_file = _ca_file(args, core)
    webrtc = _viewer_webrtc(args, core)
    token = _token(args)
    snapshot = Path(args.snapshot) if args.snapshot else None
    if args.seconds < 0:
        raise UserError("--seconds must not be negative")

    async def body(stop: asyncio.Event) -> int:
        try:
            report = await watch(core, args.camera_id, seconds=args.seconds, webrtc=webrtc,
                                 token=token, snapshot=snapshot, ca_file=ca_file,
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
        return EXIT_OK

    return run_until_signalled(body)


def cmd_cameras(args: argparse.Namespace) -> int:
    import grpc

    from protos.safetynet.v1 import core_pb2, core_pb2_grpc, mqtt_pb2
    from viewer.client import call_metadata, open_channel

    core = _core_address(args)
    ca_file = _ca_file(args, core)
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
        async with open_channel(core, ca_file) as channel:
            try:
                response = await core_pb2_grpc.CameraServiceStub(channel).ListCameras(
                    request, metadata=call_metadata(_token(args)), timeout=10)
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


# --- parser -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="safetynet",
        description="Safety Net: share district CCTV with emergency agencies over WebRTC, "
                    "with every look on the record.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from provisioning.cli import add_agent_actions, add_provision_parser

    def log_level(p: argparse.ArgumentParser, default: str = "info") -> None:
        p.add_argument("--log-level", default=default, choices=["debug", "info", "warning", "error"],
                       help=f"log verbosity (default {default})")

    p = sub.add_parser("core", help="run the cloud core (gRPC registry, sessions, signalling)",
                       description="Run the cloud core: gRPC services for agencies, MQTT link to agents.")
    p.add_argument("--config", metavar="FILE", help="core TOML config (see cloud_core/config.py)")
    p.add_argument("--listen", metavar="HOST:PORT", help=f"gRPC address (default {DEFAULT_CORE})")
    p.add_argument("--http-listen", metavar="HOST:PORT",
                   help="serve the browser console and WHEP here (default: off, or http_listen)")
    p.add_argument("--broker", metavar="HOST:PORT", help="MQTT broker (default 127.0.0.1:1883)")
    p.add_argument("--db", metavar="FILE", default="core.sqlite3", help="registry database file")
    log_level(p)
    p.set_defaults(func=cmd_core)

    p = sub.add_parser("agent", help="run a district's edge agent",
                       description="Run a district's edge agent: proxies its cameras over WebRTC "
                                   "and reports status over MQTT.")
    p.add_argument("--config", metavar="FILE", help="agent TOML config (see edge_agent/config.py)")
    log_level(p)
    p.set_defaults(func=cmd_agent)
    add_agent_actions(p)

    p = sub.add_parser("sim", help="simulators: pilot districts, RTSP cameras",
                       description="Stand-ins for what a pilot does not have yet.")
    sim = p.add_subparsers(dest="sim_command", metavar="WHAT", required=True)
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
    q = sim.add_parser("cameras", help="serve synthetic cameras as real RTSP on loopback",
                       description="Serve synthetic cameras as real RTSP streams on loopback and "
                                   "print 'CAMERA_ID rtsp://…' per camera: the pilot districts' "
                                   "cameras unless told otherwise. Options: --gop SECONDS "
                                   "--fps N --size WxH --bitrate KBPS --port N --codec C "
                                   "--cameras ID,… | --count N | --district ID "
                                   "--credentials USER:PASS --fault-at-start CAMERA=FAULT.",
                       add_help=False)
    q.set_defaults(func=cmd_sim_cameras, passthrough=True)

    p = sub.add_parser("demo", help="run broker, core and both pilot agents on this machine",
                       description="Start a Mosquitto broker on a free loopback port, the core and "
                                   "one agent per pilot district; print how to view a camera; "
                                   "stop everything cleanly on Ctrl-C.")
    p.add_argument("--state-dir", metavar="DIR", help="keep state here and write DIR/demo.json")
    p.add_argument("--port", type=int, default=50051, help="core gRPC port (default 50051; 0 = any free)")
    p.add_argument("--console-port", type=int, default=8080,
                   help="browser console and WHEP port (default 8080; 0 = any free)")
    p.add_argument("--cameras", choices=["rtsp", "synthetic"], default="rtsp",
                   help="rtsp (default): the simulator serves every camera as real RTSP and the "
                        "agents pull them; synthetic: the agents draw the scenes themselves")
    p.add_argument("--source", default="sim:?size=640x360&fps=15&gop=1",
                   help="with --cameras synthetic: the scene every camera draws")
    p.add_argument("--city", action="store_true",
                   help="the whole city: 25 districts, 68,000 cameras (most status only)")
    p.add_argument("--agent-log-level", default="warning",
                   choices=["debug", "info", "warning", "error"], help="agents' log verbosity")
    log_level(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("view", help="watch a camera through the core and report what arrived",
                       description="Open a session through the core, decode the camera's video, and "
                                   "report time to first frame, frames and resolution.")
    p.add_argument("camera_id", metavar="CAMERA_ID")
    p.add_argument("--core", metavar="HOST:PORT",
                   help=f"core address (default $SAFETYNET_CORE or {DEFAULT_CORE})")
    p.add_argument("--seconds", type=float, default=3.0, help="how long to watch (default 3)")
    p.add_argument("--snapshot", metavar="FILE.png", help="save the last decoded frame as an image")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--token-file", metavar="FILE", help="operator token (default $SAFETYNET_TOKEN)")
    p.add_argument("--ca-file", metavar="FILE",
                   help="city CA certificate: talk TLS to the core (default $SAFETYNET_CA_FILE)")
    p.add_argument("--advertise", action="append", default=[], metavar="ADDR",
                   help="ICE host address to advertise (repeatable; default loopback for a local core)")
    p.add_argument("--incident", metavar="INCIDENT_ID", default="",
                   help="the incident that justifies the view (none: your district's standing access)")
    p.add_argument("--breakglass", metavar="BREAKGLASS_ID", default="",
                   help="a supervisor's break-glass window")
    p.set_defaults(func=cmd_view)

    p = sub.add_parser("cameras", help="list the registry's cameras",
                       description="List cameras known to the core, filtered, nearest first with --near.")
    p.add_argument("--core", metavar="HOST:PORT",
                   help=f"core address (default $SAFETYNET_CORE or {DEFAULT_CORE})")
    p.add_argument("--district", help="only this district")
    p.add_argument("--status", choices=["online", "offline"], help="only cameras in this state")
    p.add_argument("--near", metavar="LAT,LON,RADIUS_M", help="within RADIUS_M metres, nearest first")
    p.add_argument("--limit", type=int, default=0, help="at most this many")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--token-file", metavar="FILE", help="operator token (default $SAFETYNET_TOKEN)")
    p.add_argument("--ca-file", metavar="FILE",
                   help="city CA certificate: talk TLS to the core (default $SAFETYNET_CA_FILE)")
    p.set_defaults(func=cmd_cameras)
    add_provision_parser(sub)

    from safetynet.cli_access import add_access_parsers

    add_access_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "passthrough", False):
        args.rest = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    from runtime.logs import configure_logging

    # Quiet by default (stdout stays for results such as --json); commands with --log-level
    # configure their own verbosity.
    configure_logging(getattr(args, "log_level", "warning"))
    try:
        return int(args.func(args))
    except UserError as exc:
        print(f"safetynet: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
