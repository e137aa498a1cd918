"""Agent CPU per viewer: H.264 passthrough against decode + re-encode, on the same camera.

One simulated RTSP camera (720p, 15 fps, ~2.5 Mb/s by default) is pulled by the real edge agent
running in a process of its own; N aiortc viewers (in this process, counting frames rather than
decoding them) watch it through the core. The agent's CPU time is read from /proc over a fixed
window once every viewer receives video. ``reencode`` is aiortc's default path: the camera
decoded once, every viewer's sender encoding the frames with its own H.264 encoder (see
bench/agent_process.py). ``pull_only`` is the agent with the camera open and no viewer (the RTSP
ingest itself), measured during the idle-close delay after the last viewer leaves.

Prints, per mode and viewer count: agent CPU (% of one core), per viewer (total / N and above
the pull-only baseline), and the frames per second each viewer received (min / p50 / max).

    python bench/passthrough_cpu.py [--viewers 1,10,20] [--reencode-viewers 1,2,4] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import statistics
import sys
from typing import Any

from media_rig import MediaRig, count_frames_without_decoding, cpu_percent

from runtime.logs import configure_logging
from simulators.pilot_districts import GANGNAM
from viewer.client import CameraViewer

CAMERA = GANGNAM.cameras[0].camera_id


async def measure(rig: MediaRig, viewers: int, args: argparse.Namespace) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        watching: list[CameraViewer] = []
        for _ in range(viewers):
            viewer = await stack.enter_async_context(rig.viewer(CAMERA))
            watching.append(viewer)
        for viewer in watching:
            await viewer.wait_frames(1, timeout=20)
        await asyncio.sleep(args.warmup)
        before = [v.report.frames for v in watching]
        cpu = await cpu_percent(rig.agent_pid, args.seconds)
        fps = sorted((v.report.frames - b) / args.seconds for v, b in zip(watching, before, strict=True))
    return {
        "viewers": viewers,
        "agent_cpu_percent": round(cpu, 2),
        "per_viewer_percent": round(cpu / viewers, 2),
        "viewer_fps": {"min": round(fps[0], 1), "p50": round(statistics.median(fps), 1),
                       "max": round(fps[-1], 1)},
    }


async def mode(name: str, counts: list[int], args: argparse.Namespace) -> dict[str, Any]:
    async with MediaRig([CAMERA], gop_s=1.0, fps=args.fps, size=args.size,
                        bitrate_kbps=args.bitrate, agent_args=["--mode", name],
                        pattern=args.pattern) as rig:
        idle = await cpu_percent(rig.agent_pid, 3)
        runs = []
        for count in counts:
            runs.append(await measure(rig, count, args))
            print(f"{name} {runs[-1]}", file=sys.stderr, flush=True)
        # The camera stays open for the idle-close delay (30 s) after the last viewer left.
        await asyncio.sleep(1)
        pull_only = await cpu_percent(rig.agent_pid, args.seconds)
    for run in runs:
        run["per_viewer_above_pull_percent"] = round(
            (run["agent_cpu_percent"] - pull_only) / run["viewers"], 2)
    return {"agent_idle_percent": round(idle, 2), "pull_only_percent": round(pull_only, 2),
            "runs": runs}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    count_frames_without_decoding()
    passthrough = await mode("passthrough", args.viewers, args)
    reencode = await mode("reencode", args.reencode_viewers, args)

    def marginal(result: dict[str, Any]) -> float:
        runs = result["runs"]
        first, last = runs[0], runs[-1]
        if last["viewers"] == first["viewers"]:
            return float(first["per_viewer_above_pull_percent"])
        return float((last["agent_cpu_percent"] - first["agent_cpu_percent"])
                     / (last["viewers"] - first["viewers"]))

    ratios = {}
    for p_run in passthrough["runs"]:
        match = next((r for r in reencode["runs"] if r["viewers"] == p_run["viewers"]), None)
        if match is not None:
            ratios[str(p_run["viewers"])] = round(match["agent_cpu_percent"]
                                                  / p_run["agent_cpu_percent"], 1)
    return {
        "benchmark": "passthrough_cpu",
        "camera": f"rtsp simulated {args.size[0]}x{args.size[1]} {args.fps} fps "
                  f"{args.bitrate} kb/s H.264, 1 s GOP, picture {args.pattern!r}",
        "window_seconds": args.seconds,
        "cpu_unit": "percent of one core, agent process only (/proc utime+stime)",
        "passthrough": passthrough,
        "reencode": reencode,
        "marginal_percent_per_viewer": {"passthrough": round(marginal(passthrough), 2),
                                        "reencode": round(marginal(reencode), 2)},
        "reencode_over_passthrough_at_equal_viewers": ratios,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", default="1,10,20")
    parser.add_argument("--reencode-viewers", default="1,2,4",
                        help="re-encoding 720p per viewer saturates two cores beyond ~6 viewers")
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--bitrate", type=int, default=2500, help="kb/s")
    parser.add_argument("--pattern", default="ball",
                        help="the camera's picture: ball (simple, the default), smpte, pinwheel, "
                             "snow (all noise: the hardest to re-encode)")
    args = parser.parse_args()
    args.viewers = [int(v) for v in args.viewers.split(",")]
    args.reencode_viewers = [int(v) for v in args.reencode_viewers.split(",")]
    match = re.fullmatch(r"(\d+)x(\d+)", args.size)
    if match is None:
        parser.error("--size wants WIDTHxHEIGHT")
    args.size = (int(match[1]), int(match[2]))
    configure_logging("warning")
    print(json.dumps(asyncio.run(run(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
