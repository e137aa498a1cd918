"""Simulated CCTV cameras served as real RTSP streams by GStreamer's RTSP server.

This file runs under the *system* Python (``/usr/bin/python3``), where Debian's
``python3-gi`` and the GStreamer introspection data live, so it imports only the
standard library and ``gi``. The venv side starts it through
``simulators/rtsp_launcher.py`` (``RtspCameraServer``).

Each camera is a mount ``/cam/<camera_id>`` backed by a *shared* media factory:
one ``videotestsrc → overlays → x264enc → rtph264pay`` pipeline per camera,
built when the first client connects and torn down when the last one leaves, so
an unwatched camera costs nothing and a watched one costs one encoder whatever
the number of viewers. The picture (a moving ball, the camera id, a wall clock)
is so simple that x264 would send a tenth of the configured bitrate, so the
stream is CBR padded with filler NAL units: the wire carries the configured
bitrate at no extra CPU. With ``SAFETYNET_RTSP_CREDENTIALS`` set, every camera
asks for Digest auth (Basic credentials sent up front are accepted too).

Output on stdout: one ``CAMERA_ID rtsp://127.0.0.1:PORT/cam/CAMERA_ID`` line per
camera once the server listens, then only replies to control commands. Logs go
to stderr as ``key=value`` lines. The password given in the environment variable
``SAFETYNET_RTSP_CREDENTIALS`` (``user:pass``) is never printed.

Control protocol, one line per command on stdin, one reply line on stdout:

    fault <camera_id> refuse   new clients are refused (mount removed: DESCRIBE gets 404)
    fault <camera_id> stop     every client now watching is disconnected (one-shot)
    fault <camera_id> stall    connections stay open but no more frames are sent (a client
                               arriving meanwhile gets none either; if nobody was watching,
                               its DESCRIBE waits, as the pipeline never gets its first frame)
    fault <camera_id> resume   back to normal (undoes refuse and stall)
        → ok <camera_id> <fault>
    status <camera_id>
        → ok <camera_id> refusing=0|1 stalled=0|1 clients=N pipelines=N
    ping
        → ok pong
    anything invalid → error <reason>

The server exits on SIGINT, SIGTERM or end of stdin (so it never outlives the
process that started it).
"""

# gi comes from Debian's python3-gi, outside the venv that type-checks the project.
# mypy: disable-error-code="import-not-found,import-untyped"

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import signal
import sys
import threading
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402 - after require_version

log = logging.getLogger("safetynet.simulators.rtsp_cameras")

CREDENTIALS_ENV = "SAFETYNET_RTSP_CREDENTIALS"
CAMERA_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
FAULTS = ("refuse", "stop", "stall", "resume")
MOUNT_PREFIX = "/cam/"


@dataclasses.dataclass(frozen=True)
class StreamSettings:
    """What every simulated camera encodes."""

    width: int = 1280
    height: int = 720
    fps: int = 15
    gop_s: float = 1.0
    bitrate_kbps: int = 2500
    codec: str = "h264"  # or "h265" / "mjpeg": cameras whose video cannot pass through to WebRTC
    pattern: str = "ball"  # videotestsrc pattern: "snow" is a worst case for encoders (all noise)

    @property
    def key_int_max(self) -> int:
        """Frames between key frames: the GOP length in frames."""
        return max(1, round(self.gop_s * self.fps))


def launch_line(camera_id: str, settings: StreamSettings) -> str:
    """The gst-launch description of one camera's pipeline.

    The valve sits before the encoder: a stalled camera stops encoding too, and
    on resume the next frame predicts from the last one the clients received,
    so the picture recovers without waiting for a key frame. Scene-cut key
    frames are off so the GOP is exactly ``key_int_max`` frames, as on a camera.
    """
    return (
        f"( videotestsrc is-live=true pattern={settings.pattern}"
        f" ! video/x-raw,format=I420,width={settings.width},height={settings.height},"
        f"framerate={settings.fps}/1"
        f' ! textoverlay text="{camera_id}" valignment=top halignment=left'
        ' font-desc="Sans 20" shaded-background=true'
        ' ! clockoverlay valignment=bottom halignment=right font-desc="Sans 16"'
        ' time-format="%Y-%m-%d %H:%M:%S" shaded-background=true'
        " ! valve name=stall drop=false drop-mode=forward-sticky-events"
        f" ! {ENCODERS[settings.codec].format(s=settings)} )"
    )


#: Pictures a camera can show: a simple scene (ball), or ones that are harder to encode.
PATTERNS = ("ball", "smpte", "pinwheel", "snow")

#: The encoder and payloader of each codec a simulated camera can send.
ENCODERS = {
    "h264": (
        "x264enc tune=zerolatency speed-preset=ultrafast threads=1"
        " key-int-max={s.key_int_max} bitrate={s.bitrate_kbps}"
        ' option-string="scenecut=0:nal-hrd=cbr:filler=1"'
        " ! video/x-h264,profile=constrained-baseline"
        " ! rtph264pay name=pay0 pt=96 config-interval=-1"
    ),
    "h265": (
        "x265enc tune=zerolatency speed-preset=ultrafast key-int-max={s.key_int_max}"
        " bitrate={s.bitrate_kbps} ! rtph265pay name=pay0 pt=96 config-interval=-1"
    ),
    "mjpeg": "jpegenc quality=50 ! rtpjpegpay name=pay0 pt=26",
}


class SimulatedCamera:
    """One mount point, its shared factory, its fault state and its live pipelines."""

    def __init__(self, camera_id: str, settings: StreamSettings, role: str | None) -> None:
        self.camera_id = camera_id
        self.path = MOUNT_PREFIX + camera_id
        self.refusing = False
        self._stalled = False
        self._lock = threading.Lock()
        self._medias: list[GstRtspServer.RTSPMedia] = []
        self.factory = GstRtspServer.RTSPMediaFactory()
        self.factory.set_launch(launch_line(camera_id, settings))
        self.factory.set_shared(True)
        if role is not None:
            self.factory.add_role_from_structure(
                Gst.Structure.from_string(
                    f"{role}, media.factory.access=(boolean)true,"
                    " media.factory.construct=(boolean)true"
                )[0]
            )
        self.factory.connect("media-configure", self._on_media_configure)

    @property
    def stalled(self) -> bool:
        return self._stalled

    @property
    def pipelines(self) -> int:
        with self._lock:
            return len(self._medias)

    def set_stalled(self, stalled: bool) -> None:
        """Open or close the valve of every pipeline, now and for later ones."""
        with self._lock:
            self._stalled = stalled
            medias = list(self._medias)
        for media in medias:
            self._valve(media).set_property("drop", stalled)

    # Called on the client's thread when the shared pipeline is built.
    def _on_media_configure(
        self, _factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia
    ) -> None:
        with self._lock:
            self._medias.append(media)
            self._valve(media).set_property("drop", self._stalled)
        media.connect("unprepared", self._on_media_unprepared)
        log.info("pipeline built camera=%s", self.camera_id)

    def _on_media_unprepared(self, media: GstRtspServer.RTSPMedia) -> None:
        with self._lock:
            if media in self._medias:
                self._medias.remove(media)
        log.info("pipeline released camera=%s", self.camera_id)

    @staticmethod
    def _valve(media: GstRtspServer.RTSPMedia) -> Gst.Element:
        return media.get_element().get_by_name("stall")


class CameraServer:
    """The RTSP server, its cameras, and which client watches which camera."""

    def __init__(
        self,
        camera_ids: list[str],
        settings: StreamSettings,
        *,
        port: int,
        credentials: tuple[str, str] | None,
    ) -> None:
        role = credentials[0] if credentials else None
        self.cameras = {cid: SimulatedCamera(cid, settings, role) for cid in camera_ids}
        self._clients: dict[GstRtspServer.RTSPClient, str] = {}
        self._clients_lock = threading.Lock()
        self.server = GstRtspServer.RTSPServer()
        self.server.set_address("127.0.0.1")
        self.server.set_service(str(port))
        self.server.connect("client-connected", self._on_client_connected)
        if credentials is not None:
            self.server.set_auth(_make_auth(*credentials))
        self._mounts = self.server.get_mount_points()
        for camera in self.cameras.values():
            self._mounts.add_factory(camera.path, camera.factory)

    def start(self) -> int:
        """Listen on 127.0.0.1 and return the bound port."""
        if self.server.attach(None) == 0:
            raise OSError(f"cannot listen on 127.0.0.1:{self.server.get_service()}")
        return int(self.server.get_bound_port())

    # --- faults --------------------------------------------------------------

    def apply_fault(self, camera_id: str, fault: str) -> None:
        camera = self.cameras[camera_id]
        if fault == "refuse":
            if not camera.refusing:
                self._mounts.remove_factory(camera.path)
                camera.refusing = True
        elif fault == "stop":
            dropped = self._drop_clients(camera_id)
            log.info("clients dropped camera=%s count=%d", camera_id, dropped)
        elif fault == "stall":
            camera.set_stalled(True)
        elif fault == "resume":
            if camera.refusing:
                self._mounts.add_factory(camera.path, camera.factory)
                camera.refusing = False
            camera.set_stalled(False)
        else:
            raise ValueError(f"unknown fault {fault!r}")
        log.info("fault applied camera=%s fault=%s", camera_id, fault)

    def status(self, camera_id: str) -> str:
        camera = self.cameras[camera_id]
        with self._clients_lock:
            clients = sum(1 for cid in self._clients.values() if cid == camera_id)
        return (
            f"refusing={int(camera.refusing)} stalled={int(camera.stalled)}"
            f" clients={clients} pipelines={camera.pipelines}"
        )

    def _drop_clients(self, camera_id: str) -> int:
        with self._clients_lock:
            doomed = {client for client, cid in self._clients.items() if cid == camera_id}

        def decide(
            _server: GstRtspServer.RTSPServer, client: GstRtspServer.RTSPClient, _data: Any
        ) -> GstRtspServer.RTSPFilterResult:
            if client in doomed:
                return GstRtspServer.RTSPFilterResult.REMOVE
            return GstRtspServer.RTSPFilterResult.KEEP

        self.server.client_filter(decide, None)
        return len(doomed)

    # --- which client watches what -------------------------------------------

    def _on_client_connected(
        self, _server: GstRtspServer.RTSPServer, client: GstRtspServer.RTSPClient
    ) -> None:
        client.connect("describe-request", self._on_request)
        client.connect("setup-request", self._on_request)
        client.connect("closed", self._on_client_closed)

    def _on_request(
        self, client: GstRtspServer.RTSPClient, context: GstRtspServer.RTSPContext
    ) -> None:
        path = context.uri.abspath if context.uri is not None else ""
        if not path.startswith(MOUNT_PREFIX):
            return
        camera_id = path[len(MOUNT_PREFIX):].split("/", 1)[0]
        if camera_id in self.cameras:
            with self._clients_lock:
                self._clients[client] = camera_id

    def _on_client_closed(self, client: GstRtspServer.RTSPClient) -> None:
        with self._clients_lock:
            self._clients.pop(client, None)


def _make_auth(user: str, password: str) -> GstRtspServer.RTSPAuth:
    """Digest (and Basic) auth for one user, allowed to see and build every camera."""
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", user)
    auth = GstRtspServer.RTSPAuth()
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    auth.add_digest(user, password, token)
    # The challenge is Digest, as on most cameras (the GI binding takes one method
    # only); a client that sends Basic credentials up front is accepted as well.
    auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
    return auth


class ControlChannel:
    """Line commands on stdin, one reply line each on stdout (see module docstring)."""

    def __init__(self, server: CameraServer, loop: GLib.MainLoop) -> None:
        self._server = server
        self._loop = loop
        self._buffer = b""
        fd = sys.stdin.fileno()
        os.set_blocking(fd, False)
        GLib.io_add_watch(fd, GLib.PRIORITY_DEFAULT, GLib.IO_IN | GLib.IO_HUP, self._on_input)

    def _on_input(self, fd: int, _condition: GLib.IOCondition) -> bool:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return True
        if not chunk:
            log.info("stdin closed, stopping")
            self._loop.quit()
            return False
        self._buffer += chunk
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            reply = self.handle(line.decode("utf-8", "replace").strip())
            if reply is not None:
                _emit(reply)
        return True

    def handle(self, line: str) -> str | None:
        words = line.split()
        if not words:
            return None
        try:
            if words[0] == "ping" and len(words) == 1:
                return "ok pong"
            if words[0] == "fault" and len(words) == 3:
                camera_id, fault = words[1], words[2]
                self._check_camera(camera_id)
                if fault not in FAULTS:
                    return f"error unknown fault {fault!r}: use one of {', '.join(FAULTS)}"
                self._server.apply_fault(camera_id, fault)
                return f"ok {camera_id} {fault}"
            if words[0] == "status" and len(words) == 2:
                self._check_camera(words[1])
                return f"ok {words[1]} {self._server.status(words[1])}"
        except KeyError as exc:
            return f"error {exc.args[0]}"
        return f"error cannot parse {line!r}: use fault|status|ping"

    def _check_camera(self, camera_id: str) -> None:
        if camera_id not in self._server.cameras:
            raise KeyError(f"unknown camera {camera_id!r}")


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve simulated cameras over RTSP on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--cameras", required=True, help="comma-separated camera ids")
    parser.add_argument("--gop", type=float, default=1.0, help="seconds between key frames")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT")
    parser.add_argument("--bitrate", type=int, default=2500, help="kbit/s")
    parser.add_argument("--codec", choices=sorted(ENCODERS), default="h264")
    parser.add_argument("--pattern", choices=PATTERNS, default="ball")
    parser.add_argument(
        "--fault-at-start", action="append", default=[], metavar="CAMERA=FAULT",
        help="apply a fault before any client connects (repeatable)",
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    args.camera_ids = [c for c in args.cameras.split(",") if c]
    for camera_id in args.camera_ids:
        if not CAMERA_ID_PATTERN.fullmatch(camera_id):
            parser.error(f"camera id {camera_id!r} must match {CAMERA_ID_PATTERN.pattern}")
    if len(set(args.camera_ids)) != len(args.camera_ids) or not args.camera_ids:
        parser.error("--cameras needs distinct, non-empty ids")
    match = re.fullmatch(r"(\d+)x(\d+)", args.size)
    if match is None:
        parser.error(f"--size {args.size!r} is not WIDTHxHEIGHT")
    args.width, args.height = int(match[1]), int(match[2])
    args.faults_at_start = []
    for item in args.fault_at_start:
        camera_id, _, fault = item.partition("=")
        if camera_id not in args.camera_ids or fault not in FAULTS:
            parser.error(f"--fault-at-start {item!r}: want CAMERA=FAULT with a known camera")
        args.faults_at_start.append((camera_id, fault))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s level=%(levelname)s logger=%(name)s event=%(message)s",
    )
    credentials = None
    raw = os.environ.get(CREDENTIALS_ENV)
    if raw:
        user, sep, password = raw.partition(":")
        if not sep or not user:
            log.error("bad credentials in %s: want user:pass", CREDENTIALS_ENV)
            return 2
        credentials = (user, password)

    Gst.init(None)
    settings = StreamSettings(
        width=args.width, height=args.height, fps=args.fps,
        gop_s=args.gop, bitrate_kbps=args.bitrate, codec=args.codec, pattern=args.pattern,
    )
    server = CameraServer(args.camera_ids, settings, port=args.port, credentials=credentials)
    for camera_id, fault in args.faults_at_start:
        server.apply_fault(camera_id, fault)
    loop = GLib.MainLoop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, _quit, loop)
    try:
        port = server.start()
    except OSError as exc:
        log.error("%s", exc)
        return 1
    ControlChannel(server, loop)
    log.info(
        "serving cameras=%d port=%d size=%dx%d fps=%d gop_s=%s bitrate_kbps=%d auth_user=%s",
        len(server.cameras), port, settings.width, settings.height, settings.fps,
        settings.gop_s, settings.bitrate_kbps, credentials[0] if credentials else "-",
    )
    for camera in server.cameras.values():
        _emit(f"{camera.camera_id} rtsp://127.0.0.1:{port}{camera.path}")
    loop.run()
    return 0


def _quit(loop: GLib.MainLoop) -> bool:
    loop.quit()
    return False  # GLib.SOURCE_REMOVE


if __name__ == "__main__":
    sys.exit(main())
