"""The systemd units of the three long-running processes: agent, core and broker.

Each restarts when it fails (a crash, a kill, a non-zero exit) and not when it was stopped:
``Restart=on-failure`` after ``RestartSec``, at most ``StartLimitBurst`` starts within
``StartLimitIntervalSec`` (then systemd leaves the unit failed for a person to look at, rather
than loop on a broken config for ever). The broker comes back first (1 s: every agent and the
core reconnect to it with their own backoff), the core after 2 s, an agent after 5 s. Every unit
runs as an unprivileged user with a read-only system (``ProtectSystem=strict``) and only its
own state folder writable.

    safetynet-agent.service   written by ``agent install`` (and shipped in the bundle)
    safetynet-core.service    written by ``provision init`` beside core.toml
    safetynet-broker.service  written by ``provision broker`` beside safetynet.conf
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

AGENT_UNIT: Final = "safetynet-agent.service"
CORE_UNIT: Final = "safetynet-core.service"
BROKER_UNIT: Final = "safetynet-broker.service"
DOCUMENTATION: Final = "https://github.com/safetynet/safetynet/blob/main/docs/district-install.md"
MOSQUITTO: Final = "/usr/sbin/mosquitto"
DEFAULT_EXECUTABLE: Final = "/opt/safetynet/.venv/bin/safetynet"
DEFAULT_USER: Final = "safetynet"
DEFAULT_CORE_DIR: Final = Path("/var/lib/safetynet/core")
"""Where the city folder's ``core/`` goes on the core's host (keys 0600, databases beside)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartPolicy:
    """How systemd brings a failed process back, and when it gives up."""

    restart_seconds: int
    burst: int = 10
    interval_seconds: int = 300

    def unit_lines(self) -> list[str]:
        return [f"StartLimitIntervalSec={self.interval_seconds}",
                f"StartLimitBurst={self.burst}"]

    def service_lines(self) -> list[str]:
        return ["Restart=on-failure", f"RestartSec={self.restart_seconds}"]


AGENT_RESTART: Final = RestartPolicy(restart_seconds=5)
CORE_RESTART: Final = RestartPolicy(restart_seconds=2)
BROKER_RESTART: Final = RestartPolicy(restart_seconds=1)


def agent_unit_text(district_id: str, *, config: Path, state_dir: Path, executable: str,
                    user: str) -> str:
    """The edge agent of ``district_id``, reading ``config``, keeping state in ``state_dir``."""
    return _unit(f"Safety Net edge agent (district {district_id})", AGENT_RESTART,
                 exec_start=f"{executable} agent --config {config}", user=user,
                 writable=state_dir)


def core_unit_text(city_name: str, *, core_dir: Path = DEFAULT_CORE_DIR,
                   executable: str = DEFAULT_EXECUTABLE, user: str = DEFAULT_USER) -> str:
    """The city's cloud core, run from ``core_dir`` (core.toml, its keys and its databases)."""
    return _unit(f"Safety Net cloud core ({city_name})", CORE_RESTART,
                 exec_start=f"{executable} core --config {core_dir / 'core.toml'}", user=user,
                 writable=core_dir)


def broker_unit_text(city_name: str, *, config: Path, user: str = "mosquitto",
                     mosquitto: str = MOSQUITTO) -> str:
    """The city's Mosquitto broker with ``config`` (safetynet.conf); reload re-reads ACL and
    CRL (SIGHUP)."""
    return _unit(f"Safety Net MQTT broker ({city_name})", BROKER_RESTART,
                 exec_start=f"{mosquitto} -c {config}", user=user, writable=None,
                 reload="/bin/kill -HUP $MAINPID")


def _unit(description: str, restart: RestartPolicy, *, exec_start: str, user: str,
          writable: Path | None, reload: str | None = None) -> str:
    return "\n".join([
        "[Unit]",
        f"Description={description}",
        f"Documentation={DOCUMENTATION}",
        "Wants=network-online.target",
        "After=network-online.target",
        *restart.unit_lines(),
        "",
        "[Service]",
        "Type=simple",
        f"User={user}",
        f"Group={user}",
        f"ExecStart={exec_start}",
        *([f"ExecReload={reload}"] if reload else []),
        *([f"WorkingDirectory={writable}"] if writable else []),
        *restart.service_lines(),
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "ProtectHome=true",
        "PrivateTmp=true",
        *([f"ReadWritePaths={writable}"] if writable else []),
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])
