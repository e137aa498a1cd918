"""A gRPC channel to the core's replicas: one address or a comma-separated list of them.

Any replica answers any call, so a client spreads its calls over every replica it was given
(gRPC's ``round_robin``) and a call that finds a replica gone (``UNAVAILABLE``: refused, reset,
or the replica shutting down) is retried on another, up to ``RETRY_ATTEMPTS`` times, before the
caller sees it. Addresses are ``HOST:PORT``; IP addresses are used as given, names are resolved
once when the channel is made (a name that has several addresses gives all of them). With TLS,
every replica's certificate must carry the name of the first address (``provision`` issues the
replicas one name), which the channel checks against.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import grpc

RETRY_ATTEMPTS: Final = 4
SERVICE_CONFIG: Final = json.dumps({
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{
        "name": [{}],  # every method of every service
        "retryPolicy": {"maxAttempts": RETRY_ATTEMPTS, "initialBackoff": "0.05s",
                        "maxBackoff": "1s", "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"]},
    }],
})
MAX_REPLICAS: Final = 32


@dataclass(frozen=True, slots=True)
class CoreTarget:
    """What ``grpc.aio.*_channel`` takes: the target, and the name TLS checks certificates for."""

    target: str
    authority: str  # HOST:PORT of the first address

    @property
    def options(self) -> list[tuple[str, str | int]]:
        return [("grpc.service_config", SERVICE_CONFIG), ("grpc.enable_retries", 1),
                ("grpc.default_authority", self.authority),
                ("grpc.ssl_target_name_override", self.authority.rpartition(":")[0].strip("[]"))]


def split_addresses(addresses: str) -> list[tuple[str, int]]:
    """``"a:1,b:2"`` as [(host, port)]; ValueError naming the entry that is wrong."""
    entries = [entry.strip() for entry in addresses.split(",")]
    if not addresses.strip() or any(not entry for entry in entries):
        raise ValueError(f"core address list {addresses!r} has an empty entry")
    if len(entries) > MAX_REPLICAS:
        raise ValueError(f"more than {MAX_REPLICAS} core addresses")
    parsed: list[tuple[str, int]] = []
    for entry in entries:
        host, colon, port = entry.rpartition(":")
        host = host.strip("[]")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"core address {entry!r} is not HOST:PORT")
        if (host, int(port)) in parsed:
            raise ValueError(f"core address {entry!r} is given twice")
        parsed.append((host, int(port)))
    return parsed


def core_target(addresses: str) -> CoreTarget:
    """The channel target for ``addresses`` (``split_addresses``); OSError if a name does not
    resolve."""
    parsed = split_addresses(addresses)
    first_host, first_port = parsed[0]
    authority = f"[{first_host}]:{first_port}" if ":" in first_host else f"{first_host}:{first_port}"
    if len(parsed) == 1:
        return CoreTarget(authority, authority)
    resolved: list[str] = []
    for host, port in parsed:
        for ip in _addresses_of(host, port):
            item = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
            if item not in resolved:
                resolved.append(item)
    families = {"ipv6" if item.startswith("[") else "ipv4" for item in resolved}
    if len(families) > 1:
        raise ValueError("core addresses mix IPv4 and IPv6; give one family")
    return CoreTarget(f"{families.pop()}:{','.join(resolved)}", authority)


def _addresses_of(host: str, port: int) -> Sequence[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in found]


def open_core_channel(addresses: str, root_certificates: bytes | None = None) -> grpc.aio.Channel:
    """A channel to the replicas at ``addresses``: TLS trusting ``root_certificates`` when given,
    else plain (loopback: the demo and the tests)."""
    target = core_target(addresses)
    if root_certificates is None:
        return grpc.aio.insecure_channel(target.target, options=target.options)
    return grpc.aio.secure_channel(
        target.target, grpc.ssl_channel_credentials(root_certificates=root_certificates),
        options=target.options)
