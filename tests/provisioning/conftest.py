"""A provisioned city for tests: CA, core, two districts (alpha, bravo), broker files on a free
loopback port, and the real Mosquitto started with exactly the generated config."""

from __future__ import annotations

import logging
import os
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

from provisioning.broker_config import CONFIG_NAME, write_broker_files
from provisioning.city import City, init_city
from provisioning.district_enrolment import add_district
from safetynet.broker import MosquittoBroker, free_port

DISTRICTS = ("alpha", "bravo")


def camera_csv(district: str, count: int = 3, *, extra_rows: tuple[str, ...] = ()) -> str:
    rows = ["id,name,lat,lon,stream_url,type"]
    rows += [f"{district}-{i:03d},{district.title()} crossing {i},37.5{i},127.0{i},"
             "sim:?size=320x240&fps=15&gop=1,fixed" for i in range(1, count + 1)]
    return "\n".join([*rows, *extra_rows]) + "\n"


@dataclass
class ProvisionedCity:
    root: Path
    city: City
    broker_port: int
    broker_dir: Path
    core_port: int

    def district_files(self, district: str) -> tuple[Path, Path]:
        """(certificate, key) of a district's agent."""
        tls = self.city.district_dir(district) / "tls"
        return tls / "agent.crt", tls / "agent.key"

    def bundle(self, district: str) -> Path:
        return self.city.bundles_dir / f"safetynet-agent-{district}"

    def tls_context(self, cert: Path | None, key: Path | None,
                    ca: Path | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(ca or self.city.ca_cert))
        if cert is not None:
            context.load_cert_chain(str(cert), str(key))
        return context

    def client(self, who: str, *, timeout: float = 5) -> aiomqtt.Client:
        """An MQTT client as ``who``: a district id, or "core"."""
        if who == "core":
            tls = self.city.core_dir / "tls"
            cert, key = tls / "mqtt-client.crt", tls / "mqtt-client.key"
        else:
            cert, key = self.district_files(who)
        return aiomqtt.Client("127.0.0.1", self.broker_port, tls_context=self.tls_context(cert, key),
                              timeout=timeout)


def provision(root: Path, districts: tuple[str, ...] = DISTRICTS, *,
              city_name: str = "Testville") -> ProvisionedCity:
    port, core_port = free_port(), free_port()
    city = init_city(root / "city", city_name=city_name, broker=("127.0.0.1", port),
                     core=("127.0.0.1", core_port))
    broker_dir = root / "broker"
    write_broker_files(city, broker_dir, port=port, bind="127.0.0.1")
    for district in districts:
        csv = root / f"{district}.csv"
        csv.write_text(camera_csv(district))
        add_district(city, district, name=f"{district.title()}-gu", cameras_csv=csv)
    return ProvisionedCity(root, city, port, broker_dir, core_port)


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """``main()`` configures logging onto the captured stderr of the test that calls it; put the
    handlers back so later tests do not log into a closed capture."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def work_dir(tmp_path: Path) -> Iterator[Path]:
    """Where cities and brokers live. Run as root, Mosquitto drops to its own user before it
    reads its files (as on a real broker host), and pytest's folders are 0700: then use a folder
    that user may traverse (it still reads only what provisioning made readable to it)."""
    if os.geteuid() != 0:
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="safetynet-city-"))
    folder.chmod(0o711)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


@pytest.fixture
def provisioned(work_dir: Path) -> ProvisionedCity:
    return provision(work_dir)


@pytest.fixture
async def city_broker(provisioned: ProvisionedCity) -> AsyncIterator[MosquittoBroker]:
    """Mosquitto running the generated safetynet.conf, unchanged."""
    config = (provisioned.broker_dir / CONFIG_NAME).read_text()
    work = provisioned.root / "mosquitto"
    work.mkdir()
    async with MosquittoBroker(port=provisioned.broker_port, config=config,
                               work_dir=work) as broker:
        yield broker
