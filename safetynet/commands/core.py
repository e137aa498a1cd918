"""``safetynet core``: run the cloud core (gRPC services for agencies, MQTT link to agents)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetynet.commands.arguments import Subcommands, add_log_level, host_port
from safetynet.commands.core_connection import DEFAULT_CORE
from safetynet.commands.exceptions import UserError
from safetynet.commands.run_loop import run_until_signalled

if TYPE_CHECKING:
    from cloud_core.config import CoreConfig


def register(subcommands: Subcommands) -> None:
    """Add ``safetynet core``."""
    p = subcommands.add_parser(
        "core", help="run the cloud core (gRPC registry, sessions, signalling)",
        description="Run the cloud core: gRPC services for agencies, MQTT link to agents.")
    p.add_argument("--config", metavar="FILE", help="core TOML config (see cloud_core/config.py)")
    p.add_argument("--listen", metavar="HOST:PORT", help=f"gRPC address (default {DEFAULT_CORE})")
    p.add_argument("--http-listen", metavar="HOST:PORT",
                   help="serve the browser console and WHEP here (default: off, or http_listen)")
    p.add_argument("--broker", metavar="HOST:PORT", help="MQTT broker (default 127.0.0.1:1883)")
    p.add_argument("--db", metavar="FILE",
                   help="registry database file (default: the config's, else core.sqlite3)")
    add_log_level(p)
    p.set_defaults(func=cmd_core)


def cmd_core(args: argparse.Namespace) -> int:
    """Run the core from ``--config`` (or defaults), with the flags overriding the file."""
    from cloud_core.server import run_core
    from runtime.logs import configure_logging

    configure_logging(args.log_level)
    config = core_config(args)
    from cloud_core.exceptions import StorageError

    try:
        return run_until_signalled(lambda stop: run_core(config, stop), fast_loop=True)
    except StorageError as exc:  # a wrong password, a dead server, a newer schema
        raise UserError(str(exc)) from exc


def core_config(args: argparse.Namespace) -> CoreConfig:
    """``--config`` (or the defaults), with the flags that were given overriding the file."""
    from cloud_core.config import CoreConfig
    from cloud_core.exceptions import ConfigError
    from runtime.mqtt_link import BrokerSettings

    try:
        config = CoreConfig.from_toml(Path(args.config)) if args.config else CoreConfig(
            database=Path(args.db or "core.sqlite3").resolve())
    except ConfigError as exc:
        raise UserError(str(exc)) from exc
    overrides: dict[str, Any] = {}
    if args.listen:
        host_port(args.listen, "--listen")
        overrides["listen"] = args.listen
    if args.http_listen:
        host_port(args.http_listen, "--http-listen")
        overrides["http_listen"] = args.http_listen
    if args.broker:
        host, port = host_port(args.broker, "--broker")
        overrides["broker"] = BrokerSettings(host=host, port=port)
    if args.config and args.db:
        overrides["database"] = Path(args.db).resolve()
    if overrides:
        from dataclasses import replace
        config = replace(config, **overrides)
    return config
