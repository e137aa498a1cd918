"""Time to first frame for a viewer joining a camera that is already open, with and without the
GOP cache, at a 1 s and a 4 s GOP.

A keeper viewer holds the camera open; then viewers join one after another, each at a random
moment of the GOP, and each measures the time from its OpenSession call to its first decoded
frame (through the core, MQTT and the agent, as an operator's viewer does). The camera is a
simulated RTSP camera (720p, 15 fps, 2.5 Mb/s by default) pulled by the real agent in its own
process. Prints min / p50 / p95 / max (ms) as JSON.

    python bench/gop_cache.py [--joins 20] [--gops 1,4] [--caches with,without]
                              [--size 1280x720] [--fps 15]

``--caches with`` measures only the product's case (the regression check of issue 15).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
from typing import Any

from media_rig import MediaRig, count_frames_without_decoding, summary

from runtime.logs import configure_logging
from simulators.pilot_districts import GANGNAM

CAMERA = GANGNAM.cameras[0].camera_id


async def joins(gop_s: float, cache: bool, args: argparse.Namespace) -> list[float]:
    agent_args = [] if cache else ["--no-gop-cache"]
    async with MediaRig([CAMERA], gop_s=gop_s, fps=args.fps, size=args.size,
                        bitrate_kbps=args.bitrate, agent_args=agent_args) as rig:
        async with rig.viewer(CAMERA) as keeper:
            await keeper.wait_frames(2 * args.fps, timeout=20)
            times = []
            for _ in range(args.joins):
                await asyncio.sleep(random.uniform(0, gop_s))  # join at any point of the GOP
                async with rig.viewer(CAMERA) as viewer, asyncio.timeout(gop_s + 10):
                    await viewer.first_frame.wait()
                times.append(viewer.report.time_to_first_frame_ms or 0.0)
            return times


async def run(args: argparse.Namespace) -> dict[str, Any]:
    count_frames_without_decoding()  # the keeper's frames; each joiner's first frame is decoded
    results: dict[str, Any] = {}
    for gop_s in args.gops:
        for cache in args.caches:
            times = await joins(gop_s, cache, args)
            key = f"gop_{gop_s:g}s_{'with' if cache else 'without'}_cache_ms"
            results[key] = summary(times)
            print(f"{key}: {results[key]}", file=sys.stderr, flush=True)
    return {
        "benchmark": "gop_cache",
        "camera": f"rtsp simulated {args.size[0]}x{args.size[1]} {args.fps} fps "
                  f"{args.bitrate} kb/s H.264",
        "joins_per_case": args.joins,
        "measure": "OpenSession call -> first decoded frame, viewer joining an open camera",
        **results,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--joins", type=int, default=20)
    parser.add_argument("--gops", default="1,4", help="GOP lengths in seconds, comma-separated")
    parser.add_argument("--caches", default="with,without",
                        help="with and/or without the GOP cache, comma-separated")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--bitrate", type=int, default=2500, help="kb/s")
    args = parser.parse_args()
    args.gops = [float(g) for g in args.gops.split(",")]
    cases = {"with": True, "without": False}
    if not set(args.caches.split(",")) <= set(cases):
        parser.error("--caches takes with and/or without")
    args.caches = [cases[c] for c in args.caches.split(",")]
    match = re.fullmatch(r"(\d+)x(\d+)", args.size)
    if match is None:
        parser.error("--size wants WIDTHxHEIGHT")
    args.size = (int(match[1]), int(match[2]))
    configure_logging("warning")
    print(json.dumps(asyncio.run(run(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
