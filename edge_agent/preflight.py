"""``safetynet agent check``: will this agent work here? Every check, in words IT staff can act on.

Checks, each independent, each a ``CheckResult`` with a hint when it fails:

- **agent certificate** (local): files readable, key private (0600), key matches certificate,
  certificate signed by the configured city CA, in its validity window, issued to this district;
- **broker**: TCP, then TLS trusting only the city CA (so a broker with any other certificate is
  refused), then an MQTT CONNECT with the agent's certificate, answered by a CONNACK;
- **core** (when ``[core] address`` is set): TLS trusting only the city CA, then the standard
  gRPC health check;
- **each camera**: ``sim:`` cameras always pass; RTSP cameras get one DESCRIBE
  (``edge_agent.camera_probe``), many at a time.

Nothing is published: the check leaves the district's retained state alone. The broker takes the
certificate's name as the MQTT client id, so running the check while the agent runs makes the
agent reconnect once.
"""

from __future__ import annotations

import asyncio
import enum
import socket
import ssl
import stat
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from edge_agent.config import AgentConfig, CameraConfig
from runtime.loopback import is_loopback
from runtime.mqtt_link import BrokerSettings

DEFAULT_TIMEOUT = 5.0
CAMERA_CONCURRENCY = 32
EXPIRY_WARNING = timedelta(days=30)

#: OpenSSL verify codes that mean "this certificate does not chain to the CA you gave".
_NOT_OUR_CA = {2, 18, 19, 20, 21}
_CONNACK = {1: "unacceptable protocol version", 2: "client id rejected",
            3: "server unavailable", 4: "bad user name or password", 5: "not authorized"}


class Outcome(enum.Enum):
    PASS = "pass"
    FAIL = "FAIL"
    SKIP = "skip"


@dataclass(frozen=True)
class CheckResult:
    check: str
    outcome: Outcome
    detail: str
    hint: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAIL


def passed(check: str, detail: str) -> CheckResult:
    return CheckResult(check, Outcome.PASS, detail)


def failed(check: str, detail: str, hint: str) -> CheckResult:
    return CheckResult(check, Outcome.FAIL, detail, hint)


async def run_checks(config: AgentConfig, *, timeout: float = DEFAULT_TIMEOUT,
                     camera_progress: Callable[[int], None] | None = None) -> list[CheckResult]:
    """All checks for ``config``: certificate, broker, core, then cameras in inventory order."""
    results = [check_agent_certificate(config)]
    broker, core = await asyncio.gather(
        check_broker(config.broker, config.agent_id, timeout=timeout),
        check_core(config.core_address, config.core_ca_file, timeout=timeout))
    results += [broker, core]
    results += await check_cameras(config.cameras, timeout=timeout, progress=camera_progress)
    return results


# --- agent certificate --------------------------------------------------------------------

def check_agent_certificate(config: AgentConfig) -> CheckResult:
    name = "agent certificate"
    settings = config.broker
    if settings.ca_file is None or settings.cert_file is None or settings.key_file is None:
        return failed(name, "[broker] has no ca_file, cert_file and key_file: plain MQTT",
                      "the city's deployment is TLS-only: use the agent.toml from the bundle")
    try:
        ca = x509.load_pem_x509_certificate(settings.ca_file.read_bytes())
        certificate = x509.load_pem_x509_certificate(settings.cert_file.read_bytes())
        key_bytes = settings.key_file.read_bytes()
        key_mode = stat.S_IMODE(settings.key_file.stat().st_mode)
    except OSError as exc:
        return failed(name, f"cannot read {exc.filename}: {exc.strerror}",
                      "run the check as the agent's user, and check the file is installed")
    except ValueError as exc:
        return failed(name, f"a certificate file is not PEM: {exc}",
                      "reinstall the bundle (safetynet agent install)")
    if key_mode & 0o077:
        return failed(name, f"{settings.key_file} has mode {key_mode:04o}: others can read the key",
                      f"chmod 600 {settings.key_file}, and ask the city whether to revoke it")
    try:
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except (ValueError, TypeError) as exc:
        return failed(name, f"{settings.key_file} is not an unencrypted PEM key ({exc})",
                      "reinstall the bundle (safetynet agent install)")
    if key.public_key().public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo) != \
            certificate.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo):
        return failed(name, "agent.key does not belong to agent.crt",
                      "both files must come from the same bundle: reinstall it")
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return failed(name, f"agent.crt is not signed by the CA in {settings.ca_file}",
                      "wrong ca_file, or a certificate from another city: reinstall the bundle")
    now = datetime.now(UTC)
    if now < certificate.not_valid_before_utc:
        return failed(name, f"not valid before {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
                      "this machine's clock is wrong: enable NTP (timedatectl set-ntp true)")
    if now > certificate.not_valid_after_utc:
        return failed(name, f"expired on {certificate.not_valid_after_utc:%Y-%m-%d}",
                      "ask the city for a new bundle (provision district add --update --renew)")
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(names[0].value) if names else ""
    if cn != f"agent:{config.district_id}":
        return failed(name, f"issued to {cn!r}, but this agent is district {config.district_id}",
                      "the bundle is for another district: install this district's bundle")
    left = certificate.not_valid_after_utc - now
    soon = f" — renew soon ({left.days} days left)" if left < EXPIRY_WARNING else ""
    return passed(name, f"{cn}, valid until {certificate.not_valid_after_utc:%Y-%m-%d}{soon}")


# --- TLS, shared by broker and core ------------------------------------------------------

class _Unreachable(Exception):
    def __init__(self, detail: str, hint: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.hint = hint


def _tls_failure(what: str, host: str, port: int, exc: BaseException,
                 client_certificate: bool | None) -> _Unreachable:
    """Words for whatever went wrong reaching ``what`` at host:port over TLS.

    ``client_certificate``: whether we showed one (None: the peer does not ask for any).
    """
    where = f"{host}:{port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        if code in _NOT_OUR_CA:
            return _Unreachable(f"{what} certificate not signed by the city CA ({exc.verify_message})",
                                "wrong ca_file? use the bundle's tls/ca.crt — or the address "
                                f"{where} is not the city's {what}")
        if code == 62:
            return _Unreachable(f"{what} certificate is not valid for the name {host!r}",
                                f"use the {what} name the city gave (the one in its certificate)")
        if code == 10:
            return _Unreachable(f"{what} certificate has expired",
                                f"the city must renew the {what}'s certificate")
        if code == 9:
            return _Unreachable(f"{what} certificate is not yet valid",
                                "this machine's clock is wrong: enable NTP (timedatectl set-ntp true)")
        return _Unreachable(f"{what} certificate refused: {exc.verify_message}",
                            f"check ca_file and the {what} address")
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER" in reason or "PACKET_LENGTH" in reason:
            return _Unreachable(f"{what} at {where} does not speak TLS",
                                f"wrong port? the city's {what} listens with TLS only")
        if client_certificate is not None and "ALERT" in reason:
            words = {"CERTIFICATE_REVOKED": "revoked", "CERTIFICATE_EXPIRED": "expired",
                     "UNKNOWN_CA": "not issued by the CA it trusts",
                     "CERTIFICATE_REQUIRED": "missing"}
            why = next((w for k, w in words.items() if k in reason),
                       "missing" if not client_certificate else reason.lower())
            return _Unreachable(f"the {what} rejected the agent certificate: {why}",
                                "ask the city for a new bundle for this district")
        return _Unreachable(f"TLS with the {what} at {where} failed: {exc.reason or exc}",
                            f"check ca_file and that {where} is the city's {what}")
    if isinstance(exc, socket.gaierror):
        return _Unreachable(f"{what} address {host!r} does not resolve",
                            "check the host name in the config, and this machine's DNS")
    if isinstance(exc, ConnectionRefusedError):
        return _Unreachable(f"{what} unreachable at {where}: connection refused",
                            "check the address/port and the firewall; is the service running?")
    if isinstance(exc, TimeoutError):
        return _Unreachable(f"{what} unreachable at {where}: no answer",
                            "check the address/firewall (is outbound TCP to that port allowed?)")
    if isinstance(exc, (asyncio.IncompleteReadError, ConnectionError)):
        return _Unreachable(f"the {what} at {where} closed the connection",
                            "it may have refused the agent certificate: ask the city to check "
                            "the broker log" if client_certificate is not None else
                            f"check that {where} is the city's {what}")
    if isinstance(exc, OSError):
        return _Unreachable(f"{what} unreachable at {where}: {exc.strerror or exc}",
                            "check the network route and the firewall")
    raise exc


def _client_context(ca_file: Path, cert_file: Path | None = None,
                    key_file: Path | None = None) -> ssl.SSLContext:
    settings = BrokerSettings(ca_file=ca_file, cert_file=cert_file, key_file=key_file)
    context = settings.tls_context()
    assert context is not None
    return context


# --- broker -------------------------------------------------------------------------------

def _remaining_length(length: int) -> bytes:
    out = bytearray()
    while True:
        length, digit = divmod(length, 128)
        out.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(out)


def mqtt_connect_packet(client_id: str, keepalive: int = 10) -> bytes:
    """An MQTT 3.1.1 CONNECT: clean session, no will, no user name (the certificate is that)."""
    ident = client_id.encode()
    body = (b"\x00\x04MQTT\x04\x02" + struct.pack("!H", keepalive)
            + struct.pack("!H", len(ident)) + ident)
    return b"\x10" + _remaining_length(len(body)) + body


async def check_broker(settings: BrokerSettings, agent_id: str, *,
                       timeout: float = DEFAULT_TIMEOUT) -> CheckResult:
    """Connect as the agent: TCP, TLS (city CA only), MQTT CONNECT/CONNACK, DISCONNECT."""
    name = f"broker {settings.host}:{settings.port}"
    if settings.ca_file is None:
        return failed(name, "no ca_file in [broker]: the agent would talk plain MQTT",
                      "the city's deployment is TLS-only: use the agent.toml from the bundle")
    try:
        _client_context(settings.ca_file, settings.cert_file, settings.key_file)
    except (OSError, ssl.SSLError) as exc:
        return failed(name, f"cannot load the TLS files: {exc}",
                      "run the check as the agent's user; reinstall the bundle if files are missing")
    try:
        connack = await _mqtt_connect(settings, f"{agent_id}-check", timeout)
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        cause: BaseException = exc
        if isinstance(exc, (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError)):
            # TLS 1.3 finishes the client's handshake before the broker judges the client's
            # certificate, so its verdict (an alert) may be lost in the hang-up. In TLS 1.2 the
            # verdict is part of the handshake: ask again that way, only to learn why.
            try:
                await _mqtt_connect(settings, f"{agent_id}-check", timeout, tls12=True)
            except ssl.SSLError as again:
                cause = again
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                pass  # no better explanation than the first
        problem = _tls_failure("broker", settings.host, settings.port, cause,
                               client_certificate=settings.cert_file is not None)
        return failed(name, problem.detail, problem.hint)
    if connack[0] != 0x20:
        return failed(name, f"{settings.host}:{settings.port} answered, but not with MQTT",
                      "wrong port? it should be the city broker's MQTT over TLS port")
    if connack[3] != 0:
        why = _CONNACK.get(connack[3], f"code {connack[3]}")
        return failed(name, f"the broker refused the agent: {why}",
                      "the broker's ACL/config may not know this district yet: ask the city "
                      "to rerun provision broker and reload mosquitto")
    return passed(name, "TLS with the city CA, agent certificate accepted, MQTT connected")


async def _mqtt_connect(settings: BrokerSettings, client_id: str, timeout: float, *,
                        tls12: bool = False) -> bytes:
    """TCP, TLS, CONNECT; the CONNACK's four bytes. Raises whatever went wrong."""
    assert settings.ca_file is not None
    context = _client_context(settings.ca_file, settings.cert_file, settings.key_file)
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(settings.host, settings.port,
                                                           ssl=context)
            writer.write(mqtt_connect_packet(client_id))
            await writer.drain()
            return await reader.readexactly(4)
    finally:
        if writer is not None:
            await _close(writer)


async def _close(writer: asyncio.StreamWriter) -> None:
    try:
        if not writer.is_closing():
            writer.write(b"\xe0\x00")  # DISCONNECT, harmless if not connected
        writer.close()
        async with asyncio.timeout(1):
            await writer.wait_closed()
    except (OSError, TimeoutError, ssl.SSLError):
        pass  # the peer went first; nothing left to close


# --- core ---------------------------------------------------------------------------------

async def check_core(address: str | None, ca_file: Path | None, *,
                     timeout: float = DEFAULT_TIMEOUT) -> CheckResult:
    """TLS to the core (city CA only), then the gRPC health service."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if not address:
        return CheckResult("core", Outcome.SKIP, "no [core] address in the config")
    name = f"core {address}"
    host, _, port_text = address.rpartition(":")
    if not host or not port_text.isdigit():
        return failed(name, f"[core] address {address!r} is not HOST:PORT", "fix agent.toml")
    port = int(port_text)
    if ca_file is None and not is_loopback(host):
        return failed(name, "no [core] ca_file: the core would be reached without TLS",
                      "the city's deployment is TLS-only: use the agent.toml from the bundle")
    # First the transport alone (TCP, TLS): its failures have precise causes and words.
    try:
        context = None
        if ca_file is not None:
            context = _client_context(ca_file)
            context.set_alpn_protocols(["h2"])
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port, ssl=context)
        await _close_quietly(writer)
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        problem = _tls_failure("core", host, port, exc, client_certificate=None)
        return failed(name, problem.detail, problem.hint)
    if ca_file is None:
        channel = grpc.aio.insecure_channel(address)
    else:
        channel = grpc.aio.secure_channel(
            address, grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes()))
    async with channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return failed(name, f"health check failed: {exc.code().name} {exc.details()}",
                          "the core is reachable but not answering: ask the city's operators")
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        return failed(name, f"the core reports {status}", "the core is starting or stopping: "
                                                          "try again in a minute")
    return passed(name, "TLS with the city CA, health SERVING" if ca_file else
                  "plain gRPC on loopback, health SERVING")


async def _close_quietly(writer: asyncio.StreamWriter) -> None:
    try:
        writer.close()
        async with asyncio.timeout(1):
            await writer.wait_closed()
    except (OSError, TimeoutError, ssl.SSLError):
        pass  # only the handshake mattered


# --- cameras ------------------------------------------------------------------------------

async def check_cameras(cameras: Sequence[CameraConfig], *,
                        timeout: float = DEFAULT_TIMEOUT,
                        progress: Callable[[int], None] | None = None,
                        concurrency: int = CAMERA_CONCURRENCY) -> list[CheckResult]:
    slots = asyncio.Semaphore(concurrency)
    done = 0

    async def one(camera: CameraConfig) -> CheckResult:
        nonlocal done
        async with slots:
            result = await check_camera(camera, timeout=timeout)
        done += 1
        if progress is not None:
            progress(done)
        return result

    return list(await asyncio.gather(*(one(c) for c in cameras)))


async def check_camera(camera: CameraConfig, *, timeout: float = DEFAULT_TIMEOUT) -> CheckResult:
    from edge_agent.camera_probe import probe_rtsp
    from edge_agent.camera_sources.rtsp import RtspTarget

    name = f"camera {camera.camera_id}"
    if camera.source.startswith("sim:"):
        return passed(name, "simulated camera")
    try:
        target = RtspTarget.parse(camera.source, camera.transport)
    except ValueError as exc:
        return failed(name, str(exc), "fix the stream_url in cameras.csv")
    where = f"{target.host}:{target.port}"
    result = await probe_rtsp(target, timeout=timeout, transcode_allowed=camera.transcode)
    if result.ok:
        return passed(name, f"RTSP answered, {result.codec}")
    cid = camera.camera_id
    if result.reason == "refused" and "connection refused" in result.detail:
        return failed(name, f"camera {cid} refused the connection at {where}",
                      "check the camera's address and port in cameras.csv, and that its RTSP "
                      "service is on")
    if result.reason == "timeout":
        return failed(name, f"camera {cid} did not answer at {where}: {result.detail}",
                      "check the network path and firewall between this machine and the camera")
    if result.reason == "unauthorized":
        return failed(name, f"camera {cid}: {result.detail}",
                      "check the user name and password in the camera's stream_url")
    if result.reason == "codec":
        return failed(name, f"camera {cid}: {result.detail}",
                      "set the camera to H.264, or allow transcoding for it")
    return failed(name, f"camera {cid}: {result.detail}",
                  "check the path in the camera's stream_url (the camera's manual names it)")
