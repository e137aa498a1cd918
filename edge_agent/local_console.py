"""The local console: a minimal page and WHEP on the district's own network, for local mode.

    GET    /local/                          the page: sign in, pick a camera, watch (browser WHEP)
    GET    /local/status                    {"district", "mode": "core" | "local"}
    POST   /local/sign-in                   {"credential": "sn1:…"} → {"token", "operator_id", "expires_at"}
    GET    /local/cameras                   (Bearer token) this district's cameras
    POST   /local/whep/cameras/{camera_id}  (Bearer token, application/sdp) → 201, SDP answer,
                                            Location: /local/whep/sessions/{session_id}
    DELETE /local/whep/sessions/{session_id}  (Bearer token) → 200

Every decision is ``LocalAccess``'s and goes to the local journal first. Plain HTTP is for
loopback; elsewhere the agent logs a warning (put it behind the district's TLS terminator).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Self

import structlog
from aiohttp import web

from edge_agent.exceptions import LocalAccessRefused, OfferRejected
from edge_agent.local_access import LocalAccess, LocalView
from runtime.loopback import is_loopback

log = structlog.get_logger(__name__)

SDP = "application/sdp"
MAX_BODY = 64 * 1024

#: Opens the agent's viewer session for an allowed view; returns the SDP answer.
OpenSession = Callable[[LocalView, str], Awaitable[str]]
#: Closes a session by id (the agent journals its end through ``LocalAccess.view_ended``).
CloseSession = Callable[[str, str], Awaitable[None]]

PAGE = """<!doctype html>
<meta charset="utf-8"><title>Safety Net — local console</title>
<h1>Local console <small id="mode"></small></h1>
<p>For this district's operators while the city core is unreachable. Every view is recorded.</p>
<form id="signin"><input id="credential" type="password" size="60" placeholder="sn1:…">
<button>Sign in</button></form><p id="error" style="color:#b00"></p>
<ul id="cameras"></ul><video id="video" autoplay muted playsinline width="640"></video>
<script>
let token = "", session = "";
const $ = id => document.getElementById(id);
fetch("status").then(r => r.json()).then(s => $("mode").textContent = s.district + ": " + s.mode);
$("signin").onsubmit = async e => {
  e.preventDefault();
  const r = await fetch("sign-in", {method: "POST", headers: {"Content-Type": "application/json"},
                                     body: JSON.stringify({credential: $("credential").value})});
  const body = await r.json();
  if (!r.ok) { $("error").textContent = body.message; return; }
  token = body.token; $("error").textContent = "";
  const cams = await (await fetch("cameras", {headers: {Authorization: "Bearer " + token}})).json();
  $("cameras").innerHTML = "";
  for (const c of cams.cameras) {
    const li = document.createElement("li"); const b = document.createElement("button");
    b.textContent = c.camera_id + " " + c.name; b.onclick = () => watch(c.camera_id);
    li.appendChild(b); $("cameras").appendChild(li);
  }
};
async function watch(camera) {
  if (session) await fetch(session, {method: "DELETE", headers: {Authorization: "Bearer " + token}});
  const pc = new RTCPeerConnection();
  pc.addTransceiver("video", {direction: "recvonly"});
  pc.ontrack = e => $("video").srcObject = e.streams[0] || new MediaStream([e.track]);
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(ok => { if (pc.iceGatheringState === "complete") ok();
                            else pc.onicegatheringstatechange = () =>
                              pc.iceGatheringState === "complete" && ok(); });
  const r = await fetch("whep/cameras/" + camera, {method: "POST", body: pc.localDescription.sdp,
      headers: {Authorization: "Bearer " + token, "Content-Type": "application/sdp"}});
  if (r.status !== 201) { $("error").textContent = (await r.json()).message; return; }
  session = r.headers.get("Location");
  await pc.setRemoteDescription({type: "answer", sdp: await r.text()});
}
</script>
"""


def _refusal(exc: LocalAccessRefused) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="safetynet-local"'} if exc.status == 401 else None
    return web.json_response({"error": exc.kind, "message": exc.message}, status=exc.status,
                             headers=headers)


@web.middleware
async def _refusals(request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                    ) -> web.StreamResponse:
    try:
        return await handler(request)
    except LocalAccessRefused as exc:
        return _refusal(exc)
    except OfferRejected as exc:
        return web.json_response({"error": "bad_offer", "message": exc.message}, status=400)


def _bearer(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise LocalAccessRefused(401, "unauthenticated",
                                 "send Authorization: Bearer <token from /local/sign-in>")
    return token.strip()


class LocalConsole:
    """The aiohttp app on ``[local] listen``; an async context manager, like the core's console."""

    def __init__(self, access: LocalAccess, cameras: Sequence[tuple[str, str]], *, host: str,
                 port: int, open_session: OpenSession, close_session: CloseSession) -> None:
        self._access = access
        self._cameras = list(cameras)
        self.host = host
        self.port = port
        self._open = open_session
        self._close = close_session
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/local/"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_refusals], client_max_size=MAX_BODY)
        app.add_routes([
            web.get("/local/", self.page),
            web.get("/local/status", self.status),
            web.post("/local/sign-in", self.sign_in),
            web.get("/local/cameras", self.cameras),
            web.post("/local/whep/cameras/{camera_id}", self.open),
            web.delete("/local/whep/sessions/{session_id}", self.close_view),
        ])
        return app

    async def __aenter__(self) -> Self:
        if not is_loopback(self.host):
            log.warning("local console without TLS on a non-loopback address", host=self.host)
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError:
            await self.close()
            raise
        self.port = int(runner.addresses[0][1])
        log.info("local console serving", url=self.url, district=self._access.district_id)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def status(self, request: web.Request) -> web.Response:
        mode = "core" if self._access.core.reachable else "local"
        return web.json_response({"district": self._access.district_id, "mode": mode})

    async def sign_in(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError as exc:
            raise LocalAccessRefused(400, "bad_request", "send JSON: {\"credential\": \"sn1:…\"}") \
                from exc
        credential = body.get("credential") if isinstance(body, dict) else None
        if not isinstance(credential, str) or not credential:
            raise LocalAccessRefused(400, "bad_request", "the JSON body needs a \"credential\"")
        signed_in = await self._access.sign_in(credential, request.remote or "")
        return web.json_response({"token": signed_in.token,
                                  "operator_id": signed_in.operator.operator_id,
                                  "expires_at": signed_in.expires_at.isoformat()})

    async def cameras(self, request: web.Request) -> web.Response:
        self._access.signed_in(_bearer(request))
        return web.json_response({"cameras": [{"camera_id": c, "name": n} for c, n in self._cameras]})

    async def open(self, request: web.Request) -> web.Response:
        token = _bearer(request)
        if request.content_type != SDP:
            raise LocalAccessRefused(415, "unsupported_media_type",
                                     f"send the SDP offer as Content-Type: {SDP}")
        try:
            offer = (await request.read()).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LocalAccessRefused(400, "bad_offer", "the SDP offer is not UTF-8 text") from exc
        view = self._access.open_view(token, request.match_info["camera_id"], request.remote or "")
        try:
            answer = await self._open(view, offer)
        except BaseException:
            self._access.view_ended(view.session_id, "offer failed", 0.0, 0)
            raise
        return web.Response(status=201, text=answer, content_type=SDP,
                            headers={"Location": f"/local/whep/sessions/{view.session_id}"})

    async def close_view(self, request: web.Request) -> web.Response:
        signed_in = self._access.signed_in(_bearer(request))
        session_id = request.match_info["session_id"]
        view = self._access.views.get(session_id)
        if view is None or view.operator.operator_id != signed_in.operator.operator_id:
            raise LocalAccessRefused(404, "not_found", f"no local session {session_id!r} of yours")
        await self._close(session_id, "closed by the viewer (local)")
        return web.Response(status=200)
