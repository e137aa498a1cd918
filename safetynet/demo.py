"""``safetynet demo``: the two-district pilot on one machine, in one command.

Starts a Mosquitto broker of its own on a free loopback port, the core (in this process), and one
edge agent per pilot district (each its own process, as in a district centre). Everything listens
and advertises on loopback only. Ctrl-C stops agents, core and broker in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from cloud_core.config import CoreConfig
from cloud_core.server import CoreServer
from runtime.mqtt_link import BrokerSettings
from safetynet.broker import MosquittoBroker, free_port
from simulators.agent_configs import write_pilot_configs
from simulators.district_outlines import write_outlines_geojson
from simulators.facilities import write_facilities_csv
from simulators.pilot_districts import PILOT_DISTRICTS
from simulators.rtsp_launcher import RtspCameraServer, pilot_camera_ids, server_unavailable_reason

log = structlog.get_logger(__name__)

STARTUP_TIMEOUT = 30.0


@dataclass(frozen=True)
class DemoOptions:
    """What ``safetynet demo``'s flags choose: where state lives, ports, cameras, agent logs."""

    state_dir: Path | None = None
    core_port: int = 50051
    console_port: int = 8080        # the browser console and WHEP (0: any free port)
    camera_source: str = "sim:?size=640x360&fps=15&gop=1"
    # "rtsp": real RTSP cameras from the simulator (what district cameras are), pulled by the
    # agents as a real camera would be; "synthetic": the agents draw the scene themselves.
    cameras: str = "rtsp"
    agent_log_level: str = "warning"


class AgentProcess:
    """One ``safetynet agent`` child process."""

    def __init__(self, district_id: str, config: Path, log_level: str) -> None:
        self.district_id = district_id
        self.config = config
        self.log_level = log_level
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the agent as ``python -m safetynet agent`` in a process group of its own."""
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "safetynet", "agent", "--config", str(self.config),
            "--log-level", self.log_level, stdin=asyncio.subprocess.DEVNULL,
            # Own process group: Ctrl-C reaches the demo, which stops agents in order.
            start_new_session=True,
        )

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; a no-op when it never started or already ended."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


async def _rtsp_cameras(stack: contextlib.AsyncExitStack) -> dict[str, str]:
    """Serve the pilot cameras as real RTSP (GStreamer); {} (synthetic) when that cannot run."""
    reason = server_unavailable_reason()
    if reason is not None:
        print(f"safetynet demo: no RTSP camera simulator here ({reason}); the agents draw "
              "synthetic cameras instead. scripts/install installs what it needs.", file=sys.stderr)
        return {}
    server = await stack.enter_async_context(RtspCameraServer(
        pilot_camera_ids(), size=(640, 360), fps=15, gop_s=1.0, bitrate_kbps=800))
    log.info("rtsp cameras serving", cameras=len(server.urls))
    return dict(server.urls)


def _core_port(wanted: int, what: str = "core") -> int:
    if wanted == 0:
        return free_port()
    try:
        import socket
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", wanted))
        return wanted
    except OSError:
        port = free_port()
        log.warning("port taken, using another", listener=what, wanted=wanted, port=port)
        return port


async def run_demo(options: DemoOptions, stop: asyncio.Event) -> int:
    """Run broker, core and agents until ``stop`` is set; 1 if the agents never came online."""
    with _state_dir(options.state_dir) as state_dir:
        async with MosquittoBroker(work_dir=state_dir) as broker:
            core_config = _core_config(options, state_dir, broker)
            async with CoreServer(core_config) as core, contextlib.AsyncExitStack() as cameras:
                sources = await _rtsp_cameras(cameras) if options.cameras == "rtsp" else {}
                configs = write_pilot_configs(state_dir / "agents", broker_host=broker.host,
                                              broker_port=broker.port, source=options.camera_source,
                                              grant_public_key=core_config.grant_public_key_path,
                                              sources=sources)
                operators = _demo_operators(core, state_dir / "tokens")
                agents = [AgentProcess(path.stem, path, options.agent_log_level) for path in configs]
                try:
                    if not await _start_agents(core, agents):
                        return 1
                    state = _demo_state(core, broker, agents, state_dir)
                    state["operators"] = operators
                    state["camera_source"] = "rtsp" if sources else "synthetic"
                    (state_dir / "demo.json").write_text(json.dumps(state, indent=2) + "\n")
                    _print_summary(state)
                    await stop.wait()
                    print("\nstopping: agents, core, broker …", flush=True)
                finally:
                    for agent in agents:
                        await agent.stop()
        print("demo stopped", flush=True)
        return 0


@contextlib.contextmanager
def _state_dir(wanted: Path | None) -> Iterator[Path]:
    """``wanted`` (kept afterwards), or a temporary folder removed when the demo ends."""
    with contextlib.ExitStack() as cleanup:
        if wanted is None:
            wanted = Path(cleanup.enter_context(
                tempfile.TemporaryDirectory(prefix="safetynet-demo-")))
        wanted.mkdir(parents=True, exist_ok=True)
        yield wanted


def _core_config(options: DemoOptions, state_dir: Path, broker: MosquittoBroker) -> CoreConfig:
    """The core on loopback, with the demo's facilities and district outlines beside its db."""
    return CoreConfig(
        database=state_dir / "core.sqlite3",
        listen=f"127.0.0.1:{_core_port(options.core_port)}",
        broker=BrokerSettings(host=broker.host, port=broker.port),
        facilities_file=write_facilities_csv(state_dir / "facilities.csv"),
        http_listen=f"127.0.0.1:{_core_port(options.console_port, 'console')}",
        district_outlines_file=write_outlines_geojson(state_dir / "district-outlines.geojson"))


async def _start_agents(core: CoreServer, agents: list[AgentProcess]) -> bool:
    """Start every agent and wait until all pilot cameras are online (False: they were not)."""
    for agent in agents:
        await agent.start()
    expected = {c.camera_id for d in PILOT_DISTRICTS for c in d.cameras}
    try:
        await core.wait_until(lambda r: _all_online(r, expected), STARTUP_TIMEOUT)
    except TimeoutError:
        print("safetynet demo: the agents did not come online within "
              f"{STARTUP_TIMEOUT:g} s; see the log above", file=sys.stderr)
        return False
    return True


# One operator per agency (and the two district centres), so every service can be tried.
DEMO_OPERATORS = (
    ("gangnam-centre", "district:gangnam", "operator"),
    ("mapo-centre", "district:mapo", "operator"),
    ("police-op", "police-112", "operator"),
    ("police-sup", "police-112", "supervisor"),
    ("fire-op", "fire-119", "operator"),
    ("disaster-op", "disaster-room", "operator"),
    ("protect-op", "vulnerable-support", "operator"),
    ("auditor", "police-112", "auditor"),
)


def _demo_operators(core: CoreServer, token_dir: Path) -> list[dict[str, str]]:
    """Create the demo's operators (once per state dir); their tokens go to 0600 files."""
    assert core.access is not None
    token_dir.mkdir(parents=True, exist_ok=True)
    listed = []
    for name, agency, role in DEMO_OPERATORS:
        token_file = token_dir / f"{name}.token"
        if core.access.operators.get(name) is None:
            _, token = core.access.operators.add(name, agency=agency, role=role,
                                                 policy=core.access.policy)
            token_file.unlink(missing_ok=True)
            fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(token + "\n")
        listed.append({"name": name, "agency": agency, "role": role, "token_file": str(token_file)})
    return listed


def _all_online(registry: Any, expected: set[str]) -> bool:
    cameras = registry.list_cameras(status="online")
    return expected <= {c.camera_id for c in cameras}


def _demo_state(core: CoreServer, broker: MosquittoBroker, agents: list[AgentProcess],
                state_dir: Path) -> dict[str, Any]:
    assert core.registry is not None
    return {
        "core": core.address,
        "console": core.console.url if core.console else None,
        "broker": f"mqtt://{broker.host}:{broker.port}",
        "database": str(core.config.database),
        "audit_database": str(core.config.audit_database),
        "pid": os.getpid(),
        "districts": [
            {
                "district_id": district.district_id,
                "name": district.name,
                "agent_pid": next((a.process.pid for a in agents
                                   if a.district_id == district.district_id and a.process), None),
                "agent_config": str(state_dir / "agents" / f"{district.district_id}.toml"),
                "cameras": [c.camera_id for c in district.cameras],
            }
            for district in PILOT_DISTRICTS
        ],
        "cameras": [c.camera_id for d in PILOT_DISTRICTS for c in d.cameras],
    }


def _print_summary(state: dict[str, Any]) -> None:
    lines = [
        "",
        "Safety Net demo is running (loopback only):",
        f"  broker  {state['broker']}",
        f"  core    {state['core']}  (gRPC; database {state['database']})",
        (f"  console {state['console']}  (browser: sign in with a token file below; "
         "WHEP: POST /whep/cameras/ID)"),
    ]
    for district in state["districts"]:
        lines.append(f"  agent   {district['district_id']:<8} {len(district['cameras'])} cameras "
                     f"(pid {district['agent_pid']})")
    tokens = {o["name"]: o["token_file"] for o in state.get("operators", [])}
    core_flag = "" if state["core"] == "127.0.0.1:50051" else f" --core {state['core']}"
    lines += ["", "Operators (token files, 0600):"]
    lines += [f"  {o['name']:<15} {o['agency']:<20} {o['role']:<10} {o['token_file']}"
              for o in state.get("operators", [])]
    lines += [
        "",
        "From another terminal — a district centre watches its own cameras:",
        f"  safetynet view gangnam-001{core_flag} --token-file {tokens.get('gangnam-centre')} "
        "--snapshot gangnam-001.png",
        f"  safetynet view mapo-001{core_flag} --token-file {tokens.get('mapo-centre')}",
        "112 reports a robbery at Gangnam Station, then watches the nearest camera:",
        f"  safetynet incident report --type robbery --at 37.4979,127.0276{core_flag} "
        f"--token-file {tokens.get('police-op')}",
        f"  safetynet view gangnam-001 --incident INCIDENT_ID{core_flag} "
        f"--token-file {tokens.get('police-op')}",
        "",
        "Ctrl-C stops everything.",
    ]
    print("\n".join(lines), flush=True)
