"""How a command reaches the running core: its address, the operator's token, the city CA for
TLS, the flags that set them (``--core``, ``--token-file``, ``--ca-file``) and the gRPC stubs."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from runtime.core_channel import open_core_channel, split_addresses
from runtime.loopback import is_loopback
from safetynet.commands.exceptions import EXIT_FAILED, UserError

DEFAULT_CORE = "127.0.0.1:50051"

#: gRPC call metadata: the operator's bearer token.
Metadata = tuple[tuple[str, str], ...]


def add_core_flag(parser: argparse.ArgumentParser) -> None:
    """``--core HOST:PORT`` (default ``$SAFETYNET_CORE``, then the local core)."""
    parser.add_argument("--core", metavar="HOST:PORT[,HOST:PORT…]",
                        help="core address, or its replicas' comma-separated "
                             f"(default $SAFETYNET_CORE or {DEFAULT_CORE})")


def add_token_flag(parser: argparse.ArgumentParser, who: str = "operator") -> None:
    """``--token-file FILE`` (default ``$SAFETYNET_TOKEN``); ``who`` holds the token."""
    parser.add_argument("--token-file", metavar="FILE", help=f"{who} token (default $SAFETYNET_TOKEN)")


def add_ca_flag(parser: argparse.ArgumentParser) -> None:
    """``--ca-file FILE``: the city CA, to talk TLS to a core on another machine."""
    parser.add_argument("--ca-file", metavar="FILE",
                        help="city CA certificate: talk TLS to the core (default $SAFETYNET_CA_FILE)")


def add_core_call_flags(parser: argparse.ArgumentParser) -> None:
    """``--core``, ``--token-file`` and ``--json``: what the commands that ``call_core`` take."""
    add_core_flag(parser)
    add_token_flag(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")


def core_address(args: argparse.Namespace) -> str:
    """The core's HOST:PORT (or its replicas', comma-separated) from ``--core``,
    ``$SAFETYNET_CORE`` or the default, checked."""
    address = str(args.core or os.environ.get("SAFETYNET_CORE") or DEFAULT_CORE)
    try:
        split_addresses(address)
    except ValueError as exc:
        raise UserError(f"--core: {exc}") from exc
    return address


def operator_token(args: argparse.Namespace) -> str | None:
    """The token from ``--token-file`` (when the command has it) or ``$SAFETYNET_TOKEN``."""
    if getattr(args, "token_file", None):
        try:
            return Path(args.token_file).read_text().strip() or None
        except OSError as exc:
            raise UserError(f"cannot read token file {args.token_file}: {exc.strerror}") from exc
    return os.environ.get("SAFETYNET_TOKEN") or None


def ca_file(args: argparse.Namespace, core: str) -> Path | None:
    """The city CA to check the core's TLS certificate with; plain gRPC only to a loopback core."""
    value = args.ca_file or os.environ.get("SAFETYNET_CA_FILE")
    if not value:
        if not all(is_loopback(host) for host, _ in split_addresses(core)):
            raise UserError(f"the core {core} is not on this machine: pass --ca-file CITY_CA.crt "
                            "(or set $SAFETYNET_CA_FILE) to talk TLS; plain gRPC is for loopback only")
        return None
    if not Path(value).is_file():
        raise UserError(f"--ca-file {value}: no such file")
    return Path(value)


def call_core(args: argparse.Namespace,
              body: Callable[[grpc.aio.Channel, Metadata], Awaitable[int]]) -> int:
    """Run ``body(channel, metadata)`` against the core with the operator's token.

    A refused call (``AioRpcError``) becomes a one-line ``UserError`` with its status code.
    """
    core = core_address(args)
    token = operator_token(args)
    if not token:
        raise UserError("an operator token is needed: --token-file FILE or $SAFETYNET_TOKEN")
    metadata = (("authorization", f"Bearer {token}"),)

    async def run() -> int:
        try:
            channel = open_core_channel(core)
        except OSError as exc:
            raise UserError(f"--core {core}: {exc}") from exc
        async with channel:
            try:
                return await body(channel, metadata)
            except grpc.aio.AioRpcError as exc:
                raise UserError(f"{exc.details()} ({exc.code().name})", EXIT_FAILED) from exc

    return asyncio.run(run())


# The generated stubs are untyped (no .pyi for *_pb2_grpc): built here and handed out as Any, so
# callers are not typed against untyped code; imported on use, so --help does not load them.

def camera_service(channel: grpc.aio.Channel) -> Any:
    """A ``CameraService`` stub on ``channel``."""
    from protos.safetynet.v1 import core_pb2_grpc

    return core_pb2_grpc.CameraServiceStub(channel)


def incident_service(channel: grpc.aio.Channel) -> Any:
    """An ``IncidentService`` stub on ``channel``."""
    from protos.safetynet.v1 import core_pb2_grpc

    return core_pb2_grpc.IncidentServiceStub(channel)


def grant_service(channel: grpc.aio.Channel) -> Any:
    """A ``GrantService`` stub on ``channel``."""
    from protos.safetynet.v1 import core_pb2_grpc

    return core_pb2_grpc.GrantServiceStub(channel)


def audit_service(channel: grpc.aio.Channel) -> Any:
    """An ``AuditService`` stub on ``channel``."""
    from protos.safetynet.v1 import core_pb2_grpc

    return core_pb2_grpc.AuditServiceStub(channel)
