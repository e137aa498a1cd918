"""``console_app``: the console's web application — JSON API, WHEP and the static console."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from cloud_core.access import AccessService
from cloud_core.console.api import ConsoleApi
from cloud_core.console.dispatch_api import DispatchApi
from cloud_core.console.district_outlines import DistrictOutline
from cloud_core.console.event_stream import EventStream
from cloud_core.console.feeds import FeedEndpoints
from cloud_core.console.http_errors import Handler, translate_errors
from cloud_core.console.whep import WhepEndpoint

STATIC_DIR = Path(__file__).with_name("static")
MAX_BODY_BYTES = 256 * 1024  # an SDP offer is a few kB; a report is a few hundred bytes

# Everything the console loads comes from the core itself: no CDN, no tiles, no web fonts.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
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
        headers.setdefault("Access-Control-Expose-Headers", "Location")
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


def console_app(access: AccessService, *,
                outlines: tuple[DistrictOutline, ...] = ()) -> web.Application:
    """The console and WHEP over ``access``; ``outlines`` are drawn on the map."""
    app = web.Application(middlewares=[security_headers, translate_errors],
                          client_max_size=MAX_BODY_BYTES)
    app.add_routes(ConsoleApi(access, outlines).routes())
    app.add_routes(WhepEndpoint(access).routes())
    app.add_routes(FeedEndpoints(access).routes())
    app.add_routes(EventStream(access).routes())
    app.add_routes(DispatchApi(access).routes())
    app.router.add_get("/officer", _officer_page)
    app.router.add_get("/", _index)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False, show_index=False)
    return app
