"""How the core's gRPC port is opened: TLS with the city's certificate, or plain on loopback.

With ``tls_cert_file``/``tls_key_file`` set (``safetynet provision init`` writes both, issued by
the city CA) the port speaks only TLS; with ``tls_client_ca_file`` too, every client must also
present a certificate from that CA (mutual TLS). Without them the port is plain — fine for the
demo and the tests on loopback, and logged as a warning on any other address.
"""

from __future__ import annotations

import grpc
import structlog

from cloud_core.config import CoreConfig
from cloud_core.exceptions import ConfigError
from runtime.loopback import is_loopback

log = structlog.get_logger(__name__)


def server_credentials(config: CoreConfig) -> grpc.ServerCredentials | None:
    """The TLS credentials ``config`` asks for, or None for a plain port."""
    if config.tls_cert_file is None or config.tls_key_file is None:
        return None
    try:
        chain = config.tls_cert_file.read_bytes()
        key = config.tls_key_file.read_bytes()
        client_ca = config.tls_client_ca_file.read_bytes() if config.tls_client_ca_file else None
    except OSError as exc:
        raise ConfigError(str(exc.filename), f"cannot read TLS file: {exc.strerror}") from exc
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def add_listen_port(server: grpc.aio.Server, config: CoreConfig) -> int:
    """Open ``config.listen`` on ``server`` (TLS when configured); the bound port, 0 on failure."""
    credentials = server_credentials(config)
    if credentials is not None:
        port = int(server.add_secure_port(config.listen, credentials))
        log.info("grpc listening with TLS", listen=config.listen,
                 client_certificates=config.tls_client_ca_file is not None)
        return port
    if not is_loopback(config.listen.rsplit(":", 1)[0]):
        log.warning("grpc listening WITHOUT TLS on a non-loopback address: set tls_cert_file "
                    "and tls_key_file (safetynet provision init writes them)", listen=config.listen)
    return int(server.add_insecure_port(config.listen))
