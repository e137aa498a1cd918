"""The fuzz suite's checks at bench scale: over 100,000 examples in all, against the real parts
(Mosquitto, the core with its console, a Gangnam agent) on loopback.

Each fuzzer is the suite's own check and strategy (``tests/fuzz/``), run with hypothesis outside
pytest and a large budget. A fuzzer that finds a failure reports it (shrunk) and the others go
on. Prints one JSON document: examples per fuzzer, failures found, seconds, load average.

    python bench/fuzz.py [--scale 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the fuzzers live in tests/

#: Examples per fuzzer at scale 1 (about 106,000 in all).
BUDGET = {
    "mqtt_core": 30_000, "mqtt_core_topics": 3_000, "mqtt_agent": 3_000,
    "sdp_check_offer": 20_000, "sdp_agent": 1_500, "console_api": 8_000,
    "csv_inventory": 20_000, "csv_inventory_bytes": 3_000, "csv_enrolment": 500,
    "policy_file": 15_000, "policy_file_bytes": 2_000,
}


def run_fuzzer(name: str, examples: int, strategy: st.SearchStrategy[Any],
               check: Callable[[Any], None]) -> dict[str, Any]:
    @settings(max_examples=examples, deadline=None, database=None, report_multiple_bugs=False,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def fuzz(value: Any) -> None:
        check(value)

    from tests.fuzz.harness import EXAMPLES

    started, before = time.monotonic(), EXAMPLES[name]
    result: dict[str, Any] = {"failures": 0}
    try:
        fuzz()
    except Exception as exc:  # the fuzzer found something: report it, run the others
        result = {"failures": 1, "failure": f"{type(exc).__name__}: {exc}"[:600]}
    result["examples"] = EXAMPLES[name] - before
    result["seconds"] = round(time.monotonic() - started, 1)
    print(f"{name}: {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def run(scale: float) -> dict[str, Any]:
    from tests.fuzz import (
        test_camera_inventory as csv_fuzz,
    )
    from tests.fuzz import (
        test_console_api as console_fuzz,
    )
    from tests.fuzz import (
        test_mqtt_payloads as mqtt_fuzz,
    )
    from tests.fuzz import (
        test_policy_files as policy_fuzz,
    )
    from tests.fuzz import (
        test_sdp_offers as sdp_fuzz,
    )
    from tests.fuzz.rig import hosted_rig

    budget = {name: max(1, int(n * scale)) for name, n in BUDGET.items()}
    load_before = list(os.getloadavg())
    results: dict[str, Any] = {}
    with hosted_rig(console=True) as rig, tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        mqtt_fuzz.record_open_session(rig)
        incident_id = console_fuzz.open_incident(rig)
        city = csv_fuzz.enrolled_city(folder / "enrolment")
        fuzzers: list[tuple[str, st.SearchStrategy[Any], Callable[[Any], None]]] = [
            ("mqtt_core", mqtt_fuzz.core_inputs(), lambda case: mqtt_fuzz.check_core_input(rig, *case)),
            ("mqtt_core_topics", st.tuples(mqtt_fuzz.TOPICS, st.binary(max_size=64)),
             lambda case: mqtt_fuzz.check_core_topic(rig, *case)),
            ("mqtt_agent", mqtt_fuzz.signal_payloads(rig),
             lambda payload: mqtt_fuzz.check_agent_request(rig, payload)),
            ("sdp_check_offer", sdp_fuzz.offers(rig.offer), sdp_fuzz.check_core_offer),
            ("sdp_agent", sdp_fuzz.offers(rig.offer),
             lambda offer: sdp_fuzz.check_agent_offer(rig, offer)),
            ("console_api", console_fuzz.requests(incident_id),
             lambda case: console_fuzz.check_console_request(rig, *case)),
            ("csv_inventory", csv_fuzz.inventories(), csv_fuzz.check_inventory_text),
            ("csv_inventory_bytes", st.binary(max_size=300),
             lambda data: csv_fuzz.check_inventory_bytes(folder, data)),
            ("csv_enrolment", csv_fuzz.inventories(),
             lambda text: csv_fuzz.check_enrolment(city, text)),
            ("policy_file", policy_fuzz.policies(), policy_fuzz.check_policy_text),
            ("policy_file_bytes", st.binary(max_size=200),
             lambda data: policy_fuzz.check_policy_file(folder, data)),
        ]
        started = time.monotonic()
        for fuzzer, strategy, check in fuzzers:
            results[fuzzer] = run_fuzzer(fuzzer, budget[fuzzer], strategy, check)
        seconds = time.monotonic() - started
    from tests.fuzz.harness import EXAMPLES

    return {
        "benchmark": "fuzz",
        "examples": sum(r["examples"] for r in results.values()),
        "failures_found": sum(r["failures"] for r in results.values()),
        "seconds": round(seconds, 1),
        "fuzzers": results,
        "sdp_agent_outcomes": {"answered": EXAMPLES["sdp_agent_answered"],
                               "refused": EXAMPLES["sdp_agent_refused"]},
        "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every budget")
    args = parser.parse_args()
    from runtime.logs import configure_logging

    configure_logging("critical")
    results = run(args.scale)
    print(json.dumps(results, indent=2))
    return 1 if results["failures_found"] else 0


if __name__ == "__main__":
    sys.exit(main())
