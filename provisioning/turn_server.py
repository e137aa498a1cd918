"""The city's TURN server (coturn): a config with REST-API authentication and its secret.

``write_turn_files`` writes ``turnserver.conf`` and ``turn-secret`` (0600). coturn checks each
credential the core mints per session (``use-auth-secret`` + ``static-auth-secret``:
runtime.turn_credentials) and refuses expired or forged ones. The relay never reaches the
city's private ranges or loopback (``denied-peer-ip``), so TURN cannot be used to probe them;
a deployment that relays to agents on private district networks allows those ranges explicitly.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from provisioning.atomic_write import write_private

CONFIG_NAME = "turnserver.conf"
SECRET_NAME = "turn-secret"
PRIVATE_RANGES = ("0.0.0.0-0.255.255.255", "10.0.0.0-10.255.255.255",
                  "100.64.0.0-100.127.255.255", "127.0.0.0-127.255.255.255",
                  "169.254.0.0-169.254.255.255", "172.16.0.0-172.31.255.255",
                  "192.168.0.0-192.168.255.255")


@dataclass(frozen=True)
class TurnServerOptions:
    realm: str
    listening_ip: str = "0.0.0.0"
    port: int = 3478
    relay_ip: str | None = None
    external_ip: str | None = None
    min_port: int = 49152
    max_port: int = 65535
    allowed_peer_ranges: tuple[str, ...] = ()  # e.g. the district networks' ranges
    deny_private: bool = True
    allow_loopback_peers: bool = False  # tests on one machine only


def turn_config_text(options: TurnServerOptions, secret: str) -> str:
    lines = [
        "# coturn configuration of the Safety Net city, written by safetynet provisioning.",
        "# Credentials are minted per session by the core (TURN REST API); nothing is stored.",
        f"listening-ip={options.listening_ip}",
        f"listening-port={options.port}",
        *([f"relay-ip={options.relay_ip}"] if options.relay_ip else []),
        *([f"external-ip={options.external_ip}"] if options.external_ip else []),
        f"min-port={options.min_port}",
        f"max-port={options.max_port}",
        "fingerprint",
        "use-auth-secret",
        f"static-auth-secret={secret}",
        f"realm={options.realm}",
        "no-cli",
        "no-tlsv1",
        "no-tlsv1_1",
        "no-multicast-peers",
        "stale-nonce=600",
    ]
    lines += [f"allowed-peer-ip={r}" for r in options.allowed_peer_ranges]
    if options.allow_loopback_peers:
        lines.append("allow-loopback-peers")
    if options.deny_private:
        lines += [f"denied-peer-ip={r}" for r in PRIVATE_RANGES]
    return "\n".join(lines) + "\n"


def write_turn_files(out_dir: Path, options: TurnServerOptions, *,
                     secret: str | None = None) -> tuple[Path, Path]:
    """Write the config and the secret (kept when already there, so minted credentials stay
    valid across a rewrite). Returns (config, secret file)."""
    secret_file = out_dir / SECRET_NAME
    if secret is None:
        secret = (secret_file.read_text().strip() if secret_file.is_file()
                  else secrets.token_urlsafe(32))
    write_private(secret_file, secret + "\n")
    config = out_dir / CONFIG_NAME
    write_private(config, turn_config_text(options, secret))  # holds the secret: 0600
    return config, secret_file


def core_turn_table(urls: Sequence[str], secret_file: Path, ttl_seconds: int = 3600) -> str:
    """The ``[turn]`` table for core.toml that matches the written server."""
    quoted = ", ".join(f'"{u}"' for u in urls)
    return (f'[turn]\nurls = [{quoted}]\nsecret_file = "{secret_file}"\n'
            f"ttl_seconds = {ttl_seconds}\n")
