"""The agent's media path before and after packetizing once: CPU per viewer, pull-only cost,
60 viewers of one camera, and where the remaining time goes (py-spy).

One simulated RTSP camera (720p, 15 fps, ~2.5 Mb/s, 1 s GOP) pulled by the real agent in its own
process (``bench/agent_process.py``), viewers in this process (counting frames, not decoding).
Per sender of the agent:

* ``aiortc``: aiortc's own RTP sender (packetize, build and ``sendto`` each packet per viewer);
* ``filler-nogso``: ours, payloads shared, one ``sendto`` per packet (no segmentation);
* ``filler``: ours with UDP segmentation offload (a run of fragments per system call);
* ``ffmpeg-pull``: ours, without filler, but the camera read by FFmpeg on a thread (the pull
  before ``rtsp_client.py``);
* ``packetized``: ours as the product runs it: also without the camera's filler data.

The simulated camera pads its 2.5 Mb/s with H.264 filler data (NAL type 12, most of each P
frame); aiortc's sender sends it, ours drops it. The ``filler`` cases keep it: like for like.

it prints agent CPU (% of one core, /proc) at each viewer count, per viewer, the pull-only cost
(camera open, nobody watching: measured during the idle-close delay), the same less the
agent's idle cost (camera closed: status, probes of its other cameras) and each viewer's frame
rate. ``--fanout 60`` then opens that many viewers on the ``packetized`` agent and reports each
one's frame loss over the window (frames received against the camera's frames). ``--profile``
records the agent with py-spy during the largest viewer count and the pull-only window and
prints the top functions by own time.

    python bench/media_path.py [--senders aiortc,filler-nogso,filler,ffmpeg-pull,packetized]
                               [--viewers 1,10,20]
                               [--fanout 60] [--seconds 10] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from media_rig import MediaRig, count_frames_without_decoding, cpu_percent

from runtime.logs import configure_logging
from simulators.pilot_districts import GANGNAM
from viewer.client import CameraViewer

CAMERA = GANGNAM.cameras[0].camera_id
SENDER_ARGS = {
    "aiortc": ["--sender", "aiortc"],
    "filler-nogso": ["--sender", "packetized", "--no-gso", "--keep-filler"],
    "filler": ["--sender", "packetized", "--keep-filler"],
    "ffmpeg-pull": ["--sender", "packetized", "--ffmpeg-pull"],
    "packetized": ["--sender", "packetized"],
}


PROFILE_RATE = 250  # samples per second
_WAITS = {"poll", "ppoll", "epoll_wait", "select", "pselect", "nanosleep", "clock_nanosleep",
          "pthread_cond_wait", "pthread_cond_timedwait", "sem_wait", "sem_timedwait", "syscall",
          "__futex_abstimed_wait_common", "futex_wait"}
_WAITING_CALLERS = ("Condition.wait", "Lock.acquire", "_worker (thread.py)", "acquire",
                    "SimpleQueue.get", "Queue.get (queue.py)", "PyThread_acquire_lock_timed",
                    "take_gil", "drop_gil")


def _waiting(names: list[str]) -> bool:
    leaf = names[-1].split(" (")[0]
    if leaf in _WAITS:
        return True
    # An unnamed libc frame under a lock or a queue wait: a futex, i.e. idle.
    return leaf.startswith("0x") and any(c in n for n in names[-3:] for c in _WAITING_CALLERS)


async def profile(pid: int, seconds: float) -> dict[str, Any]:
    """Where the agent's CPU goes over ``seconds``, from py-spy with native frames.

    Samples whose innermost frame is a wait (poll, epoll_wait, a futex: an idle thread, a
    blocked read) are left out; each remaining sample is 1/PROFILE_RATE s of CPU, so counts
    become percent of one core. ``own``: the innermost frame; ``inclusive``: anywhere on the
    stack. An approximation (sampling, and a few waits in unnamed libc frames may remain).
    """
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.NamedTemporaryFile(suffix=".txt") as out:
        process = await asyncio.create_subprocess_exec(
            py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
            "--rate", str(PROFILE_RATE), "--native", "--format", "raw", "--output", out.name,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await process.wait()
        lines = Path(out.name).read_text().splitlines()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        names = []
        for frame in stack.split(";"):
            name, _, where = frame.partition(" (")
            where = re.sub(r":\d+\)$", "", where.rsplit("/", 1)[-1])
            names.append(f"{name} ({where})" if where else name)
        if _waiting(names):
            continue
        own[names[-1]] += int(count)
        for name in set(names):
            inclusive[name] += int(count)
        total += int(count)
    scale = 100 / (PROFILE_RATE * int(seconds))
    return {"busy_percent_of_core": round(total * scale, 2),
            "own": {name: round(n * scale, 2) for name, n in own.most_common(20)},
            "inclusive": {name: round(n * scale, 2) for name, n in inclusive.most_common(25)}}


async def watch(rig: MediaRig, viewers: int, args: argparse.Namespace, seconds: float,
                profile_it: bool) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        watching: list[CameraViewer] = []
        for _ in range(viewers):
            watching.append(await stack.enter_async_context(rig.viewer(CAMERA)))
        for viewer in watching:
            await viewer.wait_frames(1, timeout=30)
        await asyncio.sleep(args.warmup)
        before = [v.report.frames for v in watching]
        cpu = await cpu_percent(rig.agent_pid, seconds)
        frames = [v.report.frames - b for v, b in zip(watching, before, strict=True)]
        # py-spy pauses the agent to sample it: profile after the CPU window, never during it.
        profiled = await profile(rig.agent_pid, seconds) if profile_it else None
    expected = args.fps * seconds
    fps = sorted(f / seconds for f in frames)
    loss = sorted(max(0.0, 100 * (1 - f / expected)) for f in frames)
    result: dict[str, Any] = {
        "viewers": viewers, "load_average": [round(x, 2) for x in os.getloadavg()],
        "agent_cpu_percent": round(cpu, 2), "per_viewer_percent": round(cpu / viewers, 3),
        "viewer_fps": {"min": round(fps[0], 2), "p50": round(statistics.median(fps), 2),
                       "max": round(fps[-1], 2)},
        "frame_loss_percent": {"p50": round(statistics.median(loss), 2), "max": round(loss[-1], 2)},
    }
    if profiled is not None:
        result["profile"] = profiled
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


async def sender_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    async with MediaRig([CAMERA], gop_s=1.0, fps=args.fps, bitrate_kbps=args.bitrate,
                        agent_args=SENDER_ARGS[name]) as rig:
        # The agent's own idle work (status, probes of its other cameras, MQTT), camera closed.
        idle = await cpu_percent(rig.agent_pid, args.seconds)
        runs = [await watch(rig, count, args, args.seconds,
                            args.profile and count == max(args.viewers) and name == "packetized")
                for count in args.viewers]
        fanout = None
        if name == "packetized" and args.fanout:
            fanout = await watch(rig, args.fanout, args, args.fanout_seconds, False)
        await asyncio.sleep(1)  # the last viewer left; the camera stays open (idle close: 30 s)
        pull = await cpu_percent(rig.agent_pid, args.pull_seconds)
        pull_profile = (await profile(rig.agent_pid, args.seconds)
                        if args.profile and name == "packetized" else None)
    result: dict[str, Any] = {"agent_idle_percent": round(idle, 2),
                              "pull_only_percent": round(pull, 2),
                              "pull_above_idle_percent": round(pull - idle, 2),
                              "pull_load_average": [round(x, 2) for x in os.getloadavg()],
                              "runs": runs}
    for run in runs:
        run["per_viewer_above_pull_percent"] = round(
            (run["agent_cpu_percent"] - pull) / run["viewers"], 3)
    if fanout is not None:
        result["fanout"] = fanout
    if pull_profile is not None:
        result["pull_profile"] = pull_profile
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    count_frames_without_decoding()
    results = {name: await sender_case(name, args) for name in args.senders}
    return {
        "benchmark": "media_path",
        "camera": f"rtsp simulated 1280x720 {args.fps} fps {args.bitrate} kb/s H.264, 1 s GOP, "
                  "RTP over TCP",
        "window_seconds": args.seconds,
        "cpu_unit": "percent of one core, agent process only (/proc utime+stime)",
        "frame_loss": "1 - frames received / (camera fps x window), per viewer",
        **results,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--senders", default=",".join(SENDER_ARGS))
    parser.add_argument("--viewers", default="1,10,20")
    parser.add_argument("--fanout", type=int, default=60, help="viewers for the loss check; 0: off")
    parser.add_argument("--fanout-seconds", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window")
    parser.add_argument("--pull-seconds", type=float, default=20.0,
                        help="pull-only window (the camera closes 30 s after the last viewer)")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--bitrate", type=int, default=2500, help="kb/s")
    parser.add_argument("--profile", action="store_true", help="py-spy the packetized agent")
    args = parser.parse_args()
    args.senders = args.senders.split(",")
    unknown = set(args.senders) - set(SENDER_ARGS)
    if unknown:
        parser.error(f"unknown sender(s): {', '.join(sorted(unknown))}")
    args.viewers = [int(v) for v in args.viewers.split(",")]
    configure_logging("warning")
    print(json.dumps(asyncio.run(run(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
