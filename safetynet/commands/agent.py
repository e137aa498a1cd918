"""``safetynet agent``: run a district's edge agent; ``agent install|check`` for district IT
staff (put a bundle from the city in place, then preflight it)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from safetynet.commands.arguments import Subcommands, add_log_level
from safetynet.commands.exceptions import EXIT_FAILED, EXIT_OK, UserError
from safetynet.commands.run_loop import run_until_signalled

if TYPE_CHECKING:
    from rich.table import Table

    from edge_agent.preflight import CheckResult
    from provisioning.agent_bundle import Installed


def register(subcommands: Subcommands) -> None:
    """Add ``safetynet agent`` and its optional actions ``install`` and ``check``."""
    p = subcommands.add_parser(
        "agent", help="run a district's edge agent",
        description="Run a district's edge agent: proxies its cameras over WebRTC "
                    "and reports status over MQTT.")
    p.add_argument("--config", metavar="FILE", help="agent TOML config (see edge_agent/config.py)")
    add_log_level(p)
    p.set_defaults(func=cmd_agent)
    actions = p.add_subparsers(dest="agent_action", metavar="[ACTION]", required=False,
                               title="actions (without one, the agent runs)")
    _register_install(actions)
    _register_check(actions)


def _register_install(actions: Subcommands) -> None:
    p = actions.add_parser(
        "install", help="put a district bundle's files in place and print the systemd steps",
        description="Install a district's agent bundle (the folder or tar.gz from the city): "
                    "check it against its manifest, put the config under PREFIX/etc/safetynet "
                    "(keys 0600), state under PREFIX/var/lib/safetynet, a systemd unit under "
                    "PREFIX/etc/systemd/system, and print the steps to start it.")
    p.add_argument("bundle", metavar="BUNDLE", help="safetynet-agent-ID.tar.gz or its folder")
    p.add_argument("--prefix", default="/", metavar="DIR", help="install under DIR (default /)")
    p.add_argument("--user", default="safetynet", help="system user the agent runs as")
    p.add_argument("--force", action="store_true",
                   help="replace an installed agent of another district")
    p.set_defaults(func=cmd_agent_install)


def _register_check(actions: Subcommands) -> None:
    p = actions.add_parser(
        "check", help="preflight: broker, core and every camera, with a hint per failure",
        description="Check that this agent will work here: its certificate, the broker (TLS with "
                    "the city CA, the agent's certificate accepted), the core (TLS, health), and "
                    "every camera. Prints a table with a hint for each failure; exits 1 if any "
                    "check failed.")
    p.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                   help="agent TOML config, e.g. /etc/safetynet/agent.toml")
    p.add_argument("--timeout", type=float, default=5.0,
                   help="seconds to wait for each peer (default 5)")
    p.add_argument("--all", action="store_true", help="list every camera, not only failures")
    p.set_defaults(func=cmd_agent_check)


# --- run ----------------------------------------------------------------------------------

def cmd_agent(args: argparse.Namespace) -> int:
    """Run the agent of ``--config`` until Ctrl-C or SIGTERM."""
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


# --- install ------------------------------------------------------------------------------

def cmd_agent_install(args: argparse.Namespace) -> int:
    """Install a district bundle under ``--prefix`` and print the steps to start the agent."""
    from provisioning.agent_bundle import install_bundle, read_bundle
    from provisioning.exceptions import ProvisioningError

    try:
        bundle = read_bundle(Path(args.bundle))
        installed = install_bundle(bundle, Path(args.prefix).resolve(), user=args.user,
                                   force=args.force)
    except ProvisioningError as exc:
        raise UserError(str(exc), EXIT_FAILED) from exc
    except PermissionError as exc:
        raise UserError(f"cannot write {exc.filename}: permission denied (run with sudo, "
                        "or pass --prefix)", EXIT_FAILED) from exc
    manifest = bundle.manifest
    print(f"installed the agent of district {installed.district_id} "
          f"({manifest.get('district_name', '')}, {manifest.get('cameras', '?')} cameras)")
    print(f"  config   {installed.config_dir}/  (agent.toml, cameras.csv, tls/, grant-public.pem)")
    print(f"  state    {installed.state_dir}/")
    print(f"  service  {installed.unit}")
    print("\nnext:")
    for step in _next_steps(installed):
        print(f"  {step}")
    return EXIT_OK


def _next_steps(installed: Installed) -> list[str]:
    """What the district's IT runs after an install: ownership (when not root), check, start."""
    user, config = installed.user, installed.config
    steps = []
    if not installed.owned:
        etc = installed.config_dir
        steps += [
            (f"sudo useradd --system --home-dir {installed.state_dir} --shell /usr/sbin/nologin "
             f"{user}    # once, if the user does not exist"),
            (f"sudo chown -R root:{user} {etc} && sudo chown {user}: {etc}/tls/agent.key "
             f"{etc}/cameras.csv {installed.state_dir}"),
        ]
    return [
        *steps,
        f"sudo -u {user} safetynet agent check --config {config}",
        "sudo systemctl daemon-reload",
        "sudo systemctl enable --now safetynet-agent",
        "journalctl -u safetynet-agent -f        # watch it come online",
    ]


# --- check --------------------------------------------------------------------------------

def cmd_agent_check(args: argparse.Namespace) -> int:
    """Preflight the agent of ``--config``: a table of checks; exit 1 if any failed."""
    from rich.console import Console

    from edge_agent.config import AgentConfig
    from edge_agent.exceptions import ConfigError
    from edge_agent.preflight import run_checks
    from safetynet.progress import progress_bar

    if not args.config:
        raise UserError("safetynet agent check: --config FILE is required")
    try:
        config = AgentConfig.from_toml(Path(args.config))
    except ConfigError as exc:
        raise UserError(str(exc), EXIT_FAILED) from exc
    with progress_bar(f"Checking {len(config.cameras)} cameras", len(config.cameras)) as advance:
        results = asyncio.run(run_checks(config, timeout=args.timeout, camera_progress=advance))

    console = Console()
    if not console.is_terminal:
        console = Console(width=1000)  # logs and pipes: one line per row, never wrapped
    console.print(_check_table(config.district_id, results, show_all=args.all))
    failures = sum(r.failed for r in results)
    if failures:
        console.print(f"[bold red]{failures} check(s) failed[/]: fix them, then run this again.")
        return EXIT_FAILED
    console.print(f"[green]all {len(results)} checks passed[/]: "
                  "sudo systemctl enable --now safetynet-agent")
    return EXIT_OK


def _check_table(district_id: str, results: list[CheckResult], *, show_all: bool) -> Table:
    """Every check but the passing cameras (all of them with ``show_all``), then a camera total."""
    from rich.table import Table
    from rich.text import Text

    from edge_agent.preflight import Outcome

    cameras = [r for r in results if r.check.startswith("camera ")]
    shown = [r for r in results if show_all or not r.check.startswith("camera ") or r.failed]
    table = Table(title=f"safetynet agent check — district {district_id}")
    table.add_column("check")
    table.add_column("result")
    table.add_column("what was found")
    table.add_column("what to do")
    style = {Outcome.PASS: "green", Outcome.FAIL: "bold red", Outcome.SKIP: "yellow"}
    for result in shown:
        # Plain Text: details quote config sections like "[broker]", which are not markup.
        table.add_row(Text(result.check), Text(result.outcome.value, style[result.outcome]),
                      Text(result.detail), Text(result.hint))
    camera_failures = sum(r.failed for r in cameras)
    if cameras and not show_all:
        table.add_row("cameras", "[red]FAIL[/]" if camera_failures else "[green]pass[/]",
                      f"{len(cameras) - camera_failures} of {len(cameras)} answered",
                      "failed cameras are listed above" if camera_failures else "")
    return table
