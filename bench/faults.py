"""The fault suite's scenarios at bench scale, with figures: broker kill/restart cycles during
live video, agent SIGKILLs, core SIGKILLs mid-write, and camera fault cycles (stall, stop,
refuse+stop, each followed by the camera's return).

Every cycle checks what the suite checks (``tests/faults/scenarios.py``); here a failed cycle is
counted (with its message) and the run goes on. Prints one JSON document: per scenario the
cycles, failures, counts and p50 / max times, plus the load average before and after.

    python bench/faults.py [--broker 20] [--agent 5] [--core 5] [--camera 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the scenarios live in tests/

Scenario = Callable[..., Awaitable[dict[str, Any]]]


def _load() -> dict[str, Scenario]:
    from tests.faults import scenarios

    return {"broker_restart": scenarios.broker_cycles,
            "agent_sigkill": scenarios.agent_kill_cycles,
            "core_sigkill": scenarios.core_kill_cycles,
            "camera_faults": scenarios.camera_fault_cycles}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    scenarios = _load()
    counts = {"broker_restart": args.broker, "agent_sigkill": args.agent,
              "core_sigkill": args.core, "camera_faults": args.camera}
    results: dict[str, Any] = {"benchmark": "faults",
                               "load_average_before": list(os.getloadavg())}
    for name, cycles in counts.items():
        if cycles <= 0:
            continue
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"safetynet-faults-{name}-") as folder:
            try:
                figures = await scenarios[name](Path(folder), cycles, keep_going=True)
            except Exception as exc:  # the scenario itself could not run: say so, go on
                figures = {"cycles": 0, "failures": 1, "problems": [f"{type(exc).__name__}: {exc}"]}
        figures["seconds"] = round(time.monotonic() - started, 1)
        figures["load_average_1m"] = round(os.getloadavg()[0], 2)
        results[name] = figures
        print(f"{name}: {json.dumps(figures)}", file=sys.stderr, flush=True)
    results["failures"] = sum(r["failures"] for r in results.values() if isinstance(r, dict))
    results["load_average_after"] = list(os.getloadavg())
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", type=int, default=20, help="broker kill/restart cycles")
    parser.add_argument("--agent", type=int, default=5, help="agent SIGKILL cycles")
    parser.add_argument("--core", type=int, default=5, help="core SIGKILL cycles")
    parser.add_argument("--camera", type=int, default=100, help="camera fault cycles")
    args = parser.parse_args()
    from runtime.logs import configure_logging

    configure_logging("error")
    results = asyncio.run(run(args))
    print(json.dumps(results, indent=2))
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
