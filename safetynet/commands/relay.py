"""``safetynet relay``: run a cloud relay (the agent's own code in relay mode), or ``relay init``
its identity and config (docs/cloud-relay.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from safetynet.commands.arguments import Subcommands, add_log_level
from safetynet.commands.exceptions import EXIT_OK, UserError
from safetynet.commands.run_loop import run_until_signalled


def register(subcommands: Subcommands) -> None:
    """Add ``safetynet relay run`` and ``safetynet relay init``."""
    p = subcommands.add_parser(
        "relay", help="run a cloud relay for an emergency's crowd of viewers",
        description="A cloud relay pulls a camera once from its district and serves the "
                    "incident's viewers from the city's cloud; the core starts and stops it.")
    actions = p.add_subparsers(dest="relay_action", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run", help="run the relay of --config until Ctrl-C or SIGTERM",
        description="Run a cloud relay: register with the core (signed by the relay's own key), "
                    "pull the cameras the core asks for once from their districts, serve the "
                    "incident's viewers, until Ctrl-C or SIGTERM.")
    run.add_argument("--config", required=True, metavar="FILE",
                     help="relay TOML (see edge_agent/relay_node.py)")
    add_log_level(run)
    run.set_defaults(func=cmd_relay_run)
    init = actions.add_parser(
        "init", help="write a relay's identity key and config, and the core's [relays] line",
        description="Create the relay's own Ed25519 key (0600) and public key, and a relay.toml; "
                    "print the line the core's config needs under [relays].")
    init.add_argument("--id", required=True, dest="relay_id", help="relay id, e.g. relay-1")
    init.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    init.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT")
    init.add_argument("--grant-key", required=True, metavar="FILE",
                      help="the core's grant public key (grant-signing.pub)")
    init.add_argument("--advertise", action="append", default=None, metavar="ADDRESS",
                      help="ICE host address to advertise (repeat; default 127.0.0.1)")
    init.set_defaults(func=cmd_relay_init)


def cmd_relay_run(args: argparse.Namespace) -> int:
    from edge_agent.exceptions import ConfigError
    from edge_agent.relay_node import RelayConfig, run_relay
    from runtime.exceptions import KeyFileError
    from runtime.logs import configure_logging

    configure_logging(args.log_level)
    try:
        config = RelayConfig.from_toml(Path(args.config))
    except ConfigError as exc:
        raise UserError(str(exc)) from exc
    try:
        return run_until_signalled(lambda stop: run_relay(config, stop))
    except KeyFileError as exc:
        raise UserError(f"{config.identity_key}: {exc}") from exc


def cmd_relay_init(args: argparse.Namespace) -> int:
    from protos.topics import check_id
    from provisioning.broker_config import relay_acl
    from runtime.signing_keys import load_or_create_signing_key, write_public_key

    try:
        relay_id = check_id(args.relay_id, "--id")
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    host, _, port = args.broker.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--broker must be HOST:PORT, got {args.broker!r}")
    grant_key = Path(args.grant_key).resolve()
    if not grant_key.is_file():
        raise UserError(f"--grant-key {grant_key}: no such file")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key_path, public_path = out / f"{relay_id}.key", out / f"{relay_id}.pub"
    write_public_key(public_path, load_or_create_signing_key(key_path))
    advertise = args.advertise or ["127.0.0.1"]
    (out / "relay.toml").write_text(
        f'[relay]\nid = "{relay_id}"\nidentity_key = "{key_path.name}"\n\n'
        f'[grants]\npublic_key = "{grant_key}"\n\n'
        f'[broker]\nhost = "{host}"\nport = {int(port)}\n\n'
        f'[webrtc]\nadvertise = [{", ".join(repr(a).replace(chr(39), chr(34)) for a in advertise)}]\n',
        encoding="utf-8")
    print(f"wrote {key_path} (keep it secret), {public_path} and {out / 'relay.toml'}")
    print(f'the core\'s config needs:\n[relays]\n{relay_id} = "{public_path.resolve()}"')
    print("the broker's ACL needs (the relay's certificate CN or user name first):")
    print("\n".join(relay_acl(relay_id)))
    return EXIT_OK
