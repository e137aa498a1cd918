"""Our agent against a C media server: the same RTSP camera served by Janus's streaming plugin.

One simulated RTSP camera (720p, 15 fps, ~2.5 Mb/s, 1 s GOP by default, RTP over UDP for both,
since Janus's RTSP client knows no other transport) is pulled once by our edge agent (its own
process, viewers through the core) and once by Janus 1.1 (``janus -F DIR``, HTTP API on
127.0.0.1, a mountpoint of type "rtsp"). The same aiortc viewers watch each. Per server:

* CPU of the server process (% of one core, /proc) with 1, 10 and 20 viewers, per viewer;
* time to first frame for a viewer joining the open camera (a keeper viewer holds it open):
  from the viewer's first signalling call (our OpenSession; Janus's "create" request) to its
  first decoded frame.

Janus never offers loopback ICE candidates (it skips loopback interfaces, whatever
``ice_enforce_list`` says), so the whole benchmark runs in a network namespace of its own with
only loopback and a veth pair whose both ends stay inside it: nothing can leave the machine.
Needs root (``unshare -n``) and ``apt-get install janus``.

    python bench/janus_compare.py [--viewers 1,10,20] [--joins 10] [--seconds 10] [--gop 1]
                                  [--sender packetized|aiortc] [--keep-filler]

The simulated camera pads its 2.5 Mb/s with H.264 filler data (NAL type 12). Janus forwards it;
our agent drops it (a receiver has no use for it), so by default it sends far fewer bytes than
Janus. ``--keep-filler`` makes the agent send it too: the like-for-like comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from media_rig import MediaRig, count_frames_without_decoding, cpu_percent, summary

from runtime.logs import configure_logging
from runtime.webrtc import WebRtcSettings
from safetynet.broker import free_port
from simulators.pilot_districts import GANGNAM

CAMERA = GANGNAM.cameras[0].camera_id
NAMESPACE_ENV = "SAFETYNET_BENCH_NETNS"
VETH_ADDRESS = "10.99.0.1"
JANUS_LIBS = Path("/usr/lib/x86_64-linux-gnu/janus")
MOUNTPOINT = 1


# --- the network namespace --------------------------------------------------------------------


def reexec_in_namespace() -> int:
    """Run this script again in a fresh network namespace: loopback plus an inner veth pair."""
    setup = (
        "set -e; ip link set lo up; ip link add v0 type veth peer name v1; "
        f"ip addr add {VETH_ADDRESS}/24 dev v0; ip link set v0 up; ip link set v1 up; "
        f"exec env {NAMESPACE_ENV}=1 " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    )
    os.execvp("unshare", ["unshare", "-n", "sh", "-c", setup])
    return 1  # not reached


# --- a tiny HTTP/1.0 client for Janus's REST API -------------------------------------------------


async def janus_call(port: int, path: str, body: dict[str, Any] | None = None,
                     timeout: float = 35.0) -> Any:
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            data = json.dumps(body).encode() if body is not None else b""
            method = "POST" if body is not None else "GET"
            writer.write(f"{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                         .encode() + data)
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
    _, _, payload = raw.partition(b"\r\n\r\n")
    return json.loads(payload)


class JanusServer:
    """Janus with only the streaming plugin and the HTTP transport, configured in a temp folder."""

    def __init__(self, camera_url: str) -> None:
        self.camera_url = camera_url
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="safetynet-janus-")
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _write_configs(self, folder: Path) -> None:
        plugins = [p.name for p in (JANUS_LIBS / "plugins").glob("libjanus_*.so")
                   if p.name != "libjanus_streaming.so"]
        transports = [p.name for p in (JANUS_LIBS / "transports").glob("libjanus_*.so")
                      if p.name != "libjanus_http.so"]
        (folder / "janus.jcfg").write_text(f"""general: {{
\tconfigs_folder = "{folder}"
\tplugins_folder = "{JANUS_LIBS / 'plugins'}"
\ttransports_folder = "{JANUS_LIBS / 'transports'}"
\tevents_folder = "{JANUS_LIBS / 'events'}"
\tloggers_folder = "{JANUS_LIBS / 'loggers'}"
\tdebug_level = 3
\tadmin_secret = "{os.urandom(8).hex()}"
}}
media: {{
\tipv6 = false
\trtp_port_range = "20000-40000"
}}
nat: {{
\tnice_debug = false
\tice_enforce_list = "v0"
\tignore_mdns = true
}}
plugins: {{
\tdisable = "{','.join(plugins)}"
}}
transports: {{
\tdisable = "{','.join(transports)}"
}}
events: {{
\tbroadcast = false
}}
""")
        (folder / "janus.transport.http.jcfg").write_text(f"""general: {{
\tjson = "compact"
\tbase_path = "/janus"
\thttp = true
\tport = {self.port}
\tip = "127.0.0.1"
\thttps = false
}}
admin: {{
\tadmin_http = false
\tadmin_https = false
}}
""")
        (folder / "janus.plugin.streaming.jcfg").write_text(f"""general: {{
}}
camera: {{
\ttype = "rtsp"
\tid = {MOUNTPOINT}
\tdescription = "{CAMERA}"
\taudio = false
\tvideo = true
\turl = "{self.camera_url}"
\trtspiface = "127.0.0.1"
}}
""")

    async def __aenter__(self) -> Self:
        folder = Path(self._dir.name)
        self._write_configs(folder)
        log = (folder / "janus.log").open("w")
        self.process = await asyncio.create_subprocess_exec(
            "janus", "-F", str(folder), "-C", str(folder / "janus.jcfg"),
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT)
        async with asyncio.timeout(15):
            while True:
                with contextlib.suppress(OSError, ValueError):
                    await janus_call(self.port, "/janus/info", timeout=2)
                    return self
                if self.process.returncode is not None:
                    raise RuntimeError("janus exited: " + (folder / "janus.log").read_text()[-2000:])
                await asyncio.sleep(0.1)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self._dir.cleanup()


class JanusViewer:
    """An aiortc viewer of a Janus streaming mountpoint, over Janus's HTTP API."""

    def __init__(self, janus: JanusServer, webrtc: WebRtcSettings) -> None:
        self._janus = janus
        self._webrtc = webrtc
        self._pc: RTCPeerConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._session = 0
        self.first_frame = asyncio.Event()
        self.frames = 0
        self.time_to_first_frame_ms: float | None = None
        self._started = 0.0
        self._transaction = 0

    async def _send(self, path: str, body: dict[str, Any]) -> Any:
        self._transaction += 1
        return await janus_call(self._janus.port, path,
                                {**body, "transaction": f"t{self._transaction}"})

    async def __aenter__(self) -> Self:
        self._started = time.perf_counter()
        created = await self._send("/janus", {"janus": "create"})
        self._session = created["data"]["id"]
        attached = await self._send(f"/janus/{self._session}",
                                    {"janus": "attach", "plugin": "janus.plugin.streaming"})
        handle = f"/janus/{self._session}/{attached['data']['id']}"
        await self._send(handle, {"janus": "message", "body": {"request": "watch", "id": MOUNTPOINT}})
        offer = None
        while offer is None:
            events = await janus_call(self._janus.port, f"/janus/{self._session}?maxev=5")
            for event in events if isinstance(events, list) else [events]:
                offer = offer or event.get("jsep")
        pc = RTCPeerConnection(self._webrtc.rtc_configuration())
        self._pc = pc

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.create_task(self._receive(track)))

        await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await self._send(handle, {"janus": "message", "body": {"request": "start"},
                                  "jsep": {"type": "answer", "sdp": pc.localDescription.sdp}})
        self._tasks.append(asyncio.create_task(self._keepalive()))
        return self

    async def _keepalive(self) -> None:
        while True:  # Janus ends sessions after 60 s without a request; a long poll is one
            await janus_call(self._janus.port, f"/janus/{self._session}?maxev=5")

    async def _receive(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            self.frames += 1
            if not self.first_frame.is_set():
                self.time_to_first_frame_ms = (time.perf_counter() - self._started) * 1000
                self.first_frame.set()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        with contextlib.suppress(OSError, ValueError, TimeoutError):
            await self._send(f"/janus/{self._session}", {"janus": "destroy"})
        if self._pc is not None:
            await self._pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# --- measuring --------------------------------------------------------------------------------


def frames_of(viewer: Any) -> int:
    return viewer.frames if isinstance(viewer, JanusViewer) else viewer.report.frames


async def cpu_runs(open_viewer: Any, pid: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    runs = []
    for count in args.viewers:
        async with contextlib.AsyncExitStack() as stack:
            viewers = [await stack.enter_async_context(open_viewer()) for _ in range(count)]
            for viewer in viewers:
                async with asyncio.timeout(20):
                    await viewer.first_frame.wait()
            await asyncio.sleep(args.warmup)
            before = [frames_of(v) for v in viewers]
            cpu = await cpu_percent(pid, args.seconds)
            fps = sorted((frames_of(v) - b) / args.seconds for v, b in zip(viewers, before, strict=True))
        runs.append({"viewers": count, "cpu_percent": round(cpu, 2),
                     "per_viewer_percent": round(cpu / count, 2),
                     "viewer_fps_p50": round(statistics.median(fps), 1),
                     "viewer_fps_min": round(fps[0], 1)})
        print(f"{runs[-1]}", file=sys.stderr, flush=True)
    return runs


async def first_frames(open_viewer: Any, args: argparse.Namespace) -> list[float]:
    times: list[float] = []
    async with open_viewer() as keeper:
        async with asyncio.timeout(20):
            await keeper.first_frame.wait()
        for _ in range(args.joins):
            await asyncio.sleep(args.gop * (0.1 + 0.8 * (len(times) % 5) / 4))  # spread over the GOP
            async with open_viewer() as viewer:
                async with asyncio.timeout(args.gop + 10):
                    await viewer.first_frame.wait()
                ttff = getattr(viewer, "time_to_first_frame_ms", None)
                if ttff is None:
                    ttff = viewer.report.time_to_first_frame_ms
                times.append(float(ttff))
    return times


async def run(args: argparse.Namespace) -> dict[str, Any]:
    count_frames_without_decoding()
    webrtc = WebRtcSettings(advertise=("127.0.0.1", VETH_ADDRESS))
    results: dict[str, Any] = {}
    async with MediaRig([CAMERA], gop_s=args.gop, fps=args.fps, size=args.size,
                        bitrate_kbps=args.bitrate, transport="udp", webrtc=webrtc,
                        agent_args=["--sender", args.sender,
                                    *(["--keep-filler"] if args.keep_filler else [])]) as rig:
        print("agent", file=sys.stderr, flush=True)
        results["agent"] = {"cpu": await cpu_runs(lambda: rig.viewer(CAMERA), rig.agent_pid, args),
                            "ttff_ms": summary(await first_frames(lambda: rig.viewer(CAMERA), args))}
        rig.agent.terminate()  # type: ignore[union-attr]  # only one puller of the camera at a time
        await rig.agent.wait()  # type: ignore[union-attr]
        assert rig.cameras is not None
        async with JanusServer(rig.cameras.urls[CAMERA]) as janus:
            print("janus", file=sys.stderr, flush=True)
            results["janus"] = {
                "cpu": await cpu_runs(lambda: JanusViewer(janus, webrtc), janus.pid, args),
                "ttff_ms": summary(await first_frames(lambda: JanusViewer(janus, webrtc), args)),
            }
    ratios = {
        str(a["viewers"]): round(a["per_viewer_percent"] / j["per_viewer_percent"], 2)
        for a, j in zip(results["agent"]["cpu"], results["janus"]["cpu"], strict=True) if j["per_viewer_percent"]
    }
    return {
        "benchmark": "janus_compare",
        "agent_sender": args.sender,
        "agent_sends_filler": args.keep_filler or args.sender == "aiortc",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "camera": f"rtsp simulated {args.size[0]}x{args.size[1]} {args.fps} fps {args.bitrate} kb/s "
                  f"H.264, {args.gop:g} s GOP, RTP over UDP",
        "window_seconds": args.seconds,
        "cpu_unit": "percent of one core, server process only (/proc utime+stime)",
        **results,
        "agent_over_janus_cpu_per_viewer": ratios,
        "agent_over_janus_ttff_p50": round(results["agent"]["ttff_ms"]["p50"]
                                           / results["janus"]["ttff_ms"]["p50"], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", default="1,10,20")
    parser.add_argument("--joins", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--gop", type=float, default=1.0)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--bitrate", type=int, default=2500, help="kb/s")
    parser.add_argument("--sender", choices=["packetized", "aiortc"], default="packetized",
                        help="the agent's RTP sender: ours, or aiortc's own (the before)")
    parser.add_argument("--keep-filler", action="store_true",
                        help="the agent forwards the camera's filler data, as Janus does")
    args = parser.parse_args()
    if shutil.which("janus") is None:
        print("janus_compare: Janus is not installed (apt-get install -y janus)", file=sys.stderr)
        return 2
    if os.environ.get(NAMESPACE_ENV) != "1":
        return reexec_in_namespace()
    args.viewers = [int(v) for v in args.viewers.split(",")]
    match = re.fullmatch(r"(\d+)x(\d+)", args.size)
    if match is None:
        parser.error("--size wants WIDTHxHEIGHT")
    args.size = (int(match[1]), int(match[2]))
    configure_logging("warning")
    print(json.dumps(asyncio.run(run(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
