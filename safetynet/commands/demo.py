"""``safetynet demo``: broker, core and both pilot agents on this machine (``safetynet/demo.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from safetynet.commands.arguments import LOG_LEVELS, Subcommands, add_log_level
from safetynet.commands.run_loop import run_until_signalled


def register(subcommands: Subcommands) -> None:
    """Add ``safetynet demo``."""
    p = subcommands.add_parser(
        "demo", help="run broker, core and both pilot agents on this machine",
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
                   choices=LOG_LEVELS, help="agents' log verbosity")
    add_log_level(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C."""
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
