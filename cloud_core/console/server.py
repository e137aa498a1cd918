"""``ConsoleServer``: the console's web app listening on ``http_listen``, owned by the core.

HTTPS when the core has ``tls_cert_file`` and ``tls_key_file`` (the same certificate as gRPC);
plain HTTP otherwise, which is for loopback (the demo, the tests) and logged as a warning on any
other address: bearer tokens must not cross a network in clear. Client certificates
(``tls_client_ca_file``) are not asked of browsers; operators sign in with their token.
"""

from __future__ import annotations

import ssl
from types import TracebackType
from typing import Self

import structlog
from aiohttp import web

from cloud_core.access import AccessService
from cloud_core.camera_feed import CameraFeed
from cloud_core.config import CoreConfig
from cloud_core.console.app import console_app
from cloud_core.console.district_outlines import DistrictOutline, load_district_outlines
from cloud_core.evidence import EvidenceCustody
from cloud_core.exceptions import ConfigError
from cloud_core.metrics import CoreMetrics
from runtime.loopback import is_loopback

log = structlog.get_logger(__name__)


def _ssl_context(config: CoreConfig) -> ssl.SSLContext | None:
    if config.tls_cert_file is None or config.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(str(config.tls_cert_file), f"cannot load TLS certificate: {exc}") from exc
    return context


class ConsoleServer:
    def __init__(self, access: AccessService, config: CoreConfig, *,
                 feed: CameraFeed | None = None, metrics: CoreMetrics | None = None,
                 evidence: EvidenceCustody | None = None) -> None:
        host, _, port = config.http_listen.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError("http_listen", f"must be HOST:PORT, got {config.http_listen!r}")
        self._access = access
        self._config = config
        self.host = host.strip("[]")
        self.port = int(port)
        self.scheme = "http"
        self._runner: web.AppRunner | None = None
        self._feed = feed
        self._metrics = metrics
        self._evidence = evidence

    @property
    def url(self) -> str:
        """Where operators point their browser, e.g. ``http://127.0.0.1:8080/``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/"

    async def __aenter__(self) -> Self:
        outlines: tuple[DistrictOutline, ...] = ()
        if self._config.district_outlines_file is not None:
            outlines = load_district_outlines(self._config.district_outlines_file)
        context = _ssl_context(self._config)
        self.scheme = "https" if context else "http"
        if context is None and not is_loopback(self.host):
            log.warning("console listening WITHOUT TLS on a non-loopback address: set "
                        "tls_cert_file and tls_key_file", listen=self._config.http_listen)
        runner = web.AppRunner(console_app(self._access, outlines=outlines, feed=self._feed,
                                           metrics=self._metrics, evidence=self._evidence,
                                           turn=self._config.turn),
                               access_log=None,
                               shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        try:
            site = web.TCPSite(runner, self.host, self.port, ssl_context=context)
            await site.start()
        except OSError:
            await self.close()
            raise
        self.port = int(runner.addresses[0][1])
        log.info("console serving", url=self.url, districts_outlined=len(outlines))
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop listening and finish in-flight requests (1 s grace); idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
