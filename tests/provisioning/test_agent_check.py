"""`safetynet agent check` against the city's real broker and core (both TLS), and what it says
when the broker address, the CA or a camera is wrong; the core's gRPC over TLS; a bundle's agent
reporting to the core through the locked-down broker."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloud_core.config import CoreConfig
from cloud_core.server import CoreServer
from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig
from runtime.webrtc import WebRtcSettings
from safetynet.broker import MosquittoBroker, free_port
from safetynet.cli import main
from tests.provisioning.conftest import ProvisionedCity, provision
from viewer.client import open_channel


@pytest.fixture
async def city_core(provisioned: ProvisionedCity, city_broker: MosquittoBroker
                    ) -> AsyncIterator[CoreServer]:
    """The core as `provision init` configured it: gRPC over TLS, MQTT over TLS as safetynet-core."""
    config = CoreConfig.from_toml(provisioned.city.core_dir / "core.toml")
    config = replace(config, listen=f"127.0.0.1:{provisioned.core_port}",
                     database=provisioned.root / "core.sqlite3")
    async with CoreServer(config) as core:
        await core.wait_connected()
        yield core


@pytest.fixture
def installed(provisioned: ProvisionedCity, capsys: pytest.CaptureFixture[str]) -> Path:
    """Alpha's bundle installed under a prefix; the path of its agent.toml."""
    prefix = provisioned.root / "alpha-host"
    assert main(["agent", "install", str(provisioned.bundle("alpha")), "--prefix", str(prefix)]) == 0
    capsys.readouterr()
    return prefix / "etc/safetynet/agent.toml"


Row = tuple[str, str, str]  # result, what was found, what to do


async def _check(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Row]]:
    """Run the CLI (it runs its own event loop: in a thread); the table's rows by check name."""
    code = await asyncio.to_thread(main, ["agent", "check", "--config", str(config), "--all",
                                          "--timeout", "3"])
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if len(cells) == 4 and cells[0] != "check":
            rows[cells[0]] = (cells[1], cells[2], cells[3])
    return code, rows


async def test_check_passes_with_the_bundle_as_installed(
        provisioned: ProvisionedCity, city_core: CoreServer, installed: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, rows = await _check(installed, capsys)
    broker = f"broker 127.0.0.1:{provisioned.broker_port}"
    core = f"core 127.0.0.1:{provisioned.core_port}"
    accepted = "TLS with the city CA, agent certificate accepted, MQTT connected"
    assert rows[broker] == ("pass", accepted, "")
    assert rows[core] == ("pass", "TLS with the city CA, health SERVING", "")
    assert rows["agent certificate"][1].startswith("agent:alpha, valid until")
    assert rows["camera alpha-001"] == ("pass", "simulated camera", "")
    assert code == 0 and len(rows) == 6  # certificate, broker, core, 3 cameras
    assert {row[0] for row in rows.values()} == {"pass"}


async def test_check_names_a_wrong_broker_address_a_wrong_ca_and_an_unreachable_camera(
        provisioned: ProvisionedCity, city_core: CoreServer, installed: Path, work_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    text = installed.read_text()
    broker = f"broker 127.0.0.1:{provisioned.broker_port}"

    # 1. The broker's address is wrong (nothing listens there).
    nowhere = free_port()
    installed.write_text(text.replace(f"port = {provisioned.broker_port}", f"port = {nowhere}"))
    code, rows = await _check(installed, capsys)
    assert code == 1
    assert rows[f"broker 127.0.0.1:{nowhere}"] == (
        "FAIL", f"broker unreachable at 127.0.0.1:{nowhere}: connection refused",
        "check the address/port and the firewall; is the service running?")
    assert rows[f"core 127.0.0.1:{provisioned.core_port}"][0] == "pass"

    # 2. The CA file is another city's.
    other = provision(work_dir / "other", districts=())
    installed.write_text(text.replace('ca_file = "tls/ca.crt"\ncert_file',
                                      f'ca_file = "{other.city.ca_cert}"\ncert_file'))
    code, rows = await _check(installed, capsys)
    assert code == 1
    not_ours = ("broker certificate not signed by the city CA (self-signed certificate in "
                "certificate chain)")
    assert rows[broker][:2] == ("FAIL", not_ours)
    assert rows[broker][2].startswith("wrong ca_file? use the bundle's tls/ca.crt")
    assert rows["agent certificate"][:2] == (
        "FAIL", f"agent.crt is not signed by the CA in {other.city.ca_cert}")

    # 3. A camera whose address is wrong.
    installed.write_text(text)
    dead = free_port()
    with (installed.parent / "cameras.csv").open("a") as inventory:
        inventory.write(f"alpha-009,Dead end,37.5,127.0,rtsp://127.0.0.1:{dead}/stream1,fixed,,\n")
    code, rows = await _check(installed, capsys)
    assert code == 1
    assert rows["camera alpha-009"] == (
        "FAIL", f"camera alpha-009 refused the connection at 127.0.0.1:{dead}",
        "check the camera's address and port in cameras.csv, and that its RTSP service is on")
    assert rows[broker][0] == rows["camera alpha-001"][0] == "pass"


async def test_core_grpc_speaks_tls_with_the_city_certificate(
        provisioned: ProvisionedCity, city_core: CoreServer, work_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{provisioned.core_port}"
    request = health_pb2.HealthCheckRequest()

    async def health(ca_file: Path | None) -> health_pb2.HealthCheckResponse:
        async with open_channel(address, ca_file) as channel:
            return await health_pb2_grpc.HealthStub(channel).Check(request, timeout=5)

    assert (await health(provisioned.city.ca_cert)).status == \
        health_pb2.HealthCheckResponse.SERVING
    other = provision(work_dir / "other", districts=())
    for wrong in (other.city.ca_cert, None):  # another city's CA; plain text to the TLS port
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health(wrong)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

    # The CLI's --ca-file: over TLS the call reaches the service (which then wants a token).
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "safetynet", "cameras", "--core", address,
        "--ca-file", str(provisioned.city.ca_cert), stderr=asyncio.subprocess.PIPE)
    _, err = await process.communicate()
    assert process.returncode == 1 and b"(UNAUTHENTICATED)" in err
    # Plain gRPC is for loopback only.
    assert main(["cameras", "--core", "10.20.30.40:50051"]) == 2
    assert "pass --ca-file" in capsys.readouterr().err


async def test_a_bundle_agent_reports_to_the_core_through_the_city_broker(
        provisioned: ProvisionedCity, city_core: CoreServer, installed: Path) -> None:
    config = replace(AgentConfig.from_toml(installed), webrtc=WebRtcSettings.loopback())
    assert config.broker.uses_tls
    async with EdgeAgent(config):
        await city_core.wait_until(
            lambda r: len(r.list_cameras(district_id="alpha", status="online")) == 3, 10)
