"""Broker-node loss on a 3-node NATS cluster (MQTT on JetStream): how long until agent and core
are back, and until a core that starts after the loss knows every camera again.

Each run starts a fresh cluster, a core and an in-process agent with synthetic cameras, both on
node 1, SIGKILLs node 1 and measures from the kill:

    agent_reconnect_s   the agent's MQTT link is up again on another node
    core_reconnect_s    the core's link is up again (and its subscriptions granted)
    convergence_s       a new core with an empty registry, started at the kill on the surviving
                        nodes, has every camera online from the retained statuses alone

Prints min / p50 / max per figure and the load average as JSON. Run it in a loopback-only
namespace (as root): ``unshare --net sh -c 'ip link set lo up && exec .venv/bin/python
bench/broker_failover.py --runs 5'``. ``--core-qos 1`` subscribes the core at QoS 1 (one
JetStream consumer per subscription) to show what that costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from cloud_core.config import CoreConfig
from cloud_core.server import CoreServer
from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig, CameraConfig
from provisioning.nats_cluster import agent_user, core_user
from runtime.logs import configure_logging
from runtime.mqtt_link import BrokerAddress, BrokerSettings
from runtime.webrtc import WebRtcSettings
from safetynet.nats_broker import NatsCluster
from simulators.pilot_districts import GANGNAM

SOURCE = "sim:?size=160x120&fps=5&gop=1&kbps=100"
PASSWORDS = {"safetynet-core": "core-secret", "agent:gangnam": "gangnam-secret"}


def _settings(user: str, hosts: tuple[BrokerAddress, ...], qos: int,
              connect_timeout: float) -> BrokerSettings:
    return BrokerSettings(hosts=hosts, username=user, password=PASSWORDS[user], keepalive=5,
                          connect_timeout=connect_timeout, max_subscribe_qos=qos)


def _all_online(cameras: int):  # type: ignore[no-untyped-def]
    return lambda r: len(r.list_cameras(district_id="gangnam", status="online")) == cameras


async def one_run(work: Path, args: argparse.Namespace) -> dict[str, float | None]:
    users = (core_user("safetynet-core", PASSWORDS["safetynet-core"]),
             agent_user("agent:gangnam", "gangnam", PASSWORDS["agent:gangnam"]))
    async with NatsCluster(users) as cluster:
        hosts = cluster.addresses
        core_config = CoreConfig(database=work / "core.sqlite3", listen="127.0.0.1:0",
                                 broker=_settings("safetynet-core", hosts, args.core_qos,
                                                  args.connect_timeout))
        agent_config = AgentConfig(
            district_id="gangnam", district_name=GANGNAM.name, agent_id="gangnam-agent",
            broker=_settings("agent:gangnam", hosts, 2, args.connect_timeout),
            webrtc=WebRtcSettings.loopback(), heartbeat_seconds=30,
            cameras=tuple(CameraConfig(c.camera_id, c.name, c.lat, c.lon, SOURCE)
                          for c in GANGNAM.cameras[:args.cameras]))
        async with CoreServer(core_config) as core, EdgeAgent(agent_config) as agent:
            await core.wait_until(_all_online(args.cameras), 20)
            killed = time.monotonic()
            await cluster.kill(cluster.index_of(agent.link.broker))
            fresh = replace(core_config, database=work / "fresh.sqlite3",
                            broker=replace(core_config.broker, hosts=hosts[1:]))
            async with CoreServer(fresh) as second:
                async def back(link: Any) -> float | None:
                    try:
                        await link.wait_connected(args.give_up)
                    except TimeoutError:
                        return None
                    return time.monotonic() - killed

                async def converged() -> float | None:
                    try:
                        await second.wait_until(_all_online(args.cameras), args.give_up)
                    except TimeoutError:
                        return None
                    return time.monotonic() - killed

                agent_s, core_s, converged_s = await asyncio.gather(
                    back(agent.link), back(core.link), converged())
    for name in ("core.sqlite3", "fresh.sqlite3"):
        for path in work.glob(name + "*"):
            path.unlink()
    return {"agent_reconnect_s": agent_s, "core_reconnect_s": core_s, "convergence_s": converged_s}


def _summary(results: list[float | None]) -> dict[str, float | int | None]:
    """min/p50/max of the runs that got there; ``gave_up``: runs that did not within --give-up."""
    values = [v for v in results if v is not None]
    if not values:
        return {"min": None, "p50": None, "max": None, "gave_up": len(results)}
    return {"min": round(min(values), 3), "p50": round(statistics.median(values), 3),
            "max": round(max(values), 3), "gave_up": len(results) - len(values)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: list[dict[str, float | None]] = []
    with tempfile.TemporaryDirectory(prefix="safetynet-bench-") as tmp:
        for _ in range(args.runs):
            results.append(await one_run(Path(tmp), args))
    return {
        "bench": "broker_failover", "engine": "nats-server (MQTT, JetStream R3)", "nodes": 3,
        "runs": args.runs, "cameras": args.cameras, "core_subscribe_qos": args.core_qos,
        "connect_timeout_s": args.connect_timeout, "give_up_s": args.give_up,
        **{key: _summary([r[key] for r in results]) for key in results[0]},
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cameras", type=int, default=20)
    parser.add_argument("--core-qos", type=int, choices=(0, 1), default=0)
    parser.add_argument("--connect-timeout", type=float, default=5.0)
    parser.add_argument("--give-up", type=float, default=30.0,
                        help="seconds after the kill before a figure counts as not reached")
    args = parser.parse_args()
    configure_logging("error")
    print(json.dumps(asyncio.run(run(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
