"""The operators' browser console and the WHEP endpoint, served by the core over HTTP(S).

    console/
    ├── app.py                console_app(access, …): routes, middlewares, static assets
    ├── api.py                the console's JSON API under /api/
    ├── whep.py               WHEP under /whep/: any standard WebRTC player
    ├── bearer.py             who is calling: the bearer token, through AccessService
    ├── http_errors.py        our errors become HTTP statuses here, and only here
    ├── district_outlines.py  district outlines (GeoJSON) for the map
    ├── server.py             ConsoleServer: the app on a TCP port, HTTPS when configured
    └── static/               the console: plain HTML, CSS and JS modules, no build step,
                              nothing fetched from anywhere else (it works offline)

Nothing here decides: every request re-authenticates and every decision is AccessService's, so
the console and WHEP follow the same policy and leave the same audit trail as gRPC.
"""

from cloud_core.console.app import console_app
from cloud_core.console.server import ConsoleServer

__all__ = ["ConsoleServer", "console_app"]
