"""``console_app``: the console's web application — JSON API, WHEP and the static console."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from cloud_core.access import AccessService
from cloud_core.camera_feed import CameraFeed
from cloud_core.console.api import ConsoleApi
from cloud_core.console.dispatch_api import DispatchApi
from cloud_core.console.district_outlines import DistrictOutline
from cloud_core.console.event_stream import EventStream
from cloud_core.console.evidence_api import EvidenceApi
from cloud_core.console.feeds import FeedEndpoints
from cloud_core.console.http_errors import Handler, translate_errors
from cloud_core.console.ice_servers import IceServersEndpoint
from cloud_core.console.whep import WhepEndpoint
from cloud_core.evidence import EvidenceCustody
from cloud_core.metrics import CONTENT_TYPE, CoreMetrics
from runtime.turn_credentials import TurnSettings

STATIC_DIR = Path(__file__).with_name("static")
MAX_BODY_BYTES = 256 * 1024  # an SDP offer is a few kB; a report is a few hundred bytes

# Everything the console loads comes from the core itself: no CDN, no tiles, no web fonts.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    path = request.path
    if path.startswith("/whep/"):
        # Bearer tokens, no cookies: any origin's player may call, the token decides.
        headers.setdefault("Access-Control-Allow-Origin", "*")
        headers.setdefault("Access-Control-Expose-Headers", "Location, Link")
    if path.startswith(("/api/", "/whep/")):
        headers.setdefault("Cache-Control", "no-store")
    else:
        headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Cache-Control", "no-cache")
    return response


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def _officer_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "officer.html")


def metrics_route(metrics: CoreMetrics) -> web.RouteDef:
    """``GET /metrics``: Prometheus text; counts only, no personal data, so no sign-in."""

    async def handler(request: web.Request) -> web.Response:
        body = await asyncio.to_thread(metrics.render)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    return web.get("/metrics", handler)


def console_app(access: AccessService, *, outlines: tuple[DistrictOutline, ...] = (),
                feed: CameraFeed | None = None, metrics: CoreMetrics | None = None,
                evidence: EvidenceCustody | None = None,
                turn: TurnSettings | None = None) -> web.Application:
    """The console and WHEP over ``access``; ``outlines`` are drawn on the map.

    ``feed`` pushes camera changes to consoles (the core's, fed by its status ingest; without
    one, a feed over the registry that only serves snapshots); ``metrics`` adds ``/metrics``;
    ``evidence`` (the core's clip custody) adds the tiles' "preserve" button's API; ``turn``
    (the core's ``[turn]``) lets ``/api/ice-servers`` mint relay credentials for the console.
    """
    app = web.Application(middlewares=[security_headers, translate_errors],
                          client_max_size=MAX_BODY_BYTES)
    app.add_routes(ConsoleApi(access, outlines, feed=feed, metrics=metrics).routes())
    if metrics is not None:
        app.add_routes([metrics_route(metrics)])
    app.add_routes(IceServersEndpoint(access, turn).routes())
    app.add_routes(WhepEndpoint(access).routes())
    app.add_routes(FeedEndpoints(access).routes())
    app.add_routes(EventStream(access).routes())
    app.add_routes(DispatchApi(access).routes())
    if evidence is not None:
        app.add_routes(EvidenceApi(access, evidence).routes())
    app.router.add_get("/officer", _officer_page)
    app.router.add_get("/", _index)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False, show_index=False)
    return app
