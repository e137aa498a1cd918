"""`provision core add|list|revoke`: each core replica its own MQTT identity, checked against the
real Mosquitto (generated config) and real nats-server nodes: a replica has the core's
permissions, publishes only its own status topic, and once revoked is refused."""

from __future__ import annotations

import asyncio
import ssl
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import aiomqtt
import pytest
from cryptography.x509.oid import NameOID

from cloud_core.config import CoreConfig
from cloud_core.server import CoreServer
from edge_agent.preflight import Outcome, check_broker
from protos import topics
from protos.safetynet.v1 import mqtt_pb2
from provisioning.broker_config import CONFIG_NAME
from provisioning.certificate_authority import common_name, load_certificate
from provisioning.core_replicas import add_replica, revoke_replica
from provisioning.nats_cluster import MqttTls, city_users, write_city_nats_cluster
from runtime.mqtt_link import BrokerSettings
from safetynet.broker import MosquittoBroker, free_port
from safetynet.cli import main
from safetynet.nats_broker import NatsCluster
from tests.provisioning.conftest import ProvisionedCity
from tests.provisioning.test_broker_acl import _reload

REPLICAS = ("core-a", "core-b")
PILOT = "safetynet-core"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _status(replica: str) -> str:
    return topics.core_status_route(replica).topic


def _replica_files(provisioned: ProvisionedCity, name: str) -> tuple[Path, Path]:
    tls = provisioned.city.replica_dir(name) / "tls"
    return tls / "mqtt-client.crt", tls / "mqtt-client.key"


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def _until_all(client: aiomqtt.Client, wanted: set[bytes],
                     timeout: float = 5.0) -> list[tuple[str, bytes]]:
    """Every message until each payload in ``wanted`` has come."""
    seen: list[tuple[str, bytes]] = []
    async with asyncio.timeout(timeout):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            seen.append((str(message.topic), message.payload))
            if wanted <= {payload for _, payload in seen}:
                return seen
    raise AssertionError("unreachable")


@pytest.fixture
def replicas(provisioned: ProvisionedCity) -> tuple[str, ...]:
    """core-a and core-b enrolled (each listening on a free loopback port)."""
    for name in REPLICAS:
        add_replica(provisioned.city, name, listen=f"127.0.0.1:{free_port()}")
    return REPLICAS


@pytest.fixture
async def replica_broker(provisioned: ProvisionedCity, replicas: tuple[str, ...]
                         ) -> AsyncIterator[MosquittoBroker]:
    """Mosquitto running the generated safetynet.conf, its ACL written with the replicas."""
    config = (provisioned.broker_dir / CONFIG_NAME).read_text()
    work = provisioned.root / "mosquitto"
    work.mkdir()
    async with MosquittoBroker(port=provisioned.broker_port, config=config,
                               work_dir=work) as broker:
        yield broker


def _client(provisioned: ProvisionedCity, who: str) -> aiomqtt.Client:
    """An MQTT client as a replica, the pilot core ("core") or a district's agent."""
    if who in REPLICAS:
        context = provisioned.tls_context(*_replica_files(provisioned, who))
        return aiomqtt.Client("127.0.0.1", provisioned.broker_port, tls_context=context,
                              timeout=5)
    return provisioned.client(who)


# --- the folder and its config ------------------------------------------------------------

def test_add_writes_the_replicas_identity_and_a_config_on_the_shared_files(
        provisioned: ProvisionedCity, capsys: pytest.CaptureFixture[str]) -> None:
    city, root = provisioned.city, str(provisioned.city.root)
    grant_key = city.grant_key.read_bytes()
    assert main(["provision", "core", "add", "core-a", "--dir", root, "--listen",
                 "10.0.0.5:50051", "--storage-url",
                 "postgresql://safetynet@db.city.example:5432/safetynet"]) == 0
    out = capsys.readouterr().out
    assert "new certificate core:core-a" in out and "created the city's audit checkpoint" in out
    checkpoint_key = city.checkpoint_key.read_bytes()
    assert main(["provision", "core", "add", "core-b", "--dir", root]) == 0
    out = capsys.readouterr().out
    assert "checkpoint key" not in out and "no --storage-url" in out

    folder = city.replica_dir("core-a")
    cert, key = _replica_files(provisioned, "core-a")
    assert _mode(key) == 0o600 and _mode(city.checkpoint_key) == 0o600
    assert _mode(cert) == 0o644 and _mode(folder / "core.toml") == 0o644
    assert key.read_text().splitlines()[1] not in out
    certificate = load_certificate(cert)
    certificate.verify_directly_issued_by(city.authority().certificate)
    assert common_name(certificate) == "core:core-a"
    assert [a.value for a in certificate.subject.get_attributes_for_oid(
        NameOID.ORGANIZATIONAL_UNIT_NAME)] == ["core"]

    config = CoreConfig.from_toml(folder / "core.toml")
    assert config.client_id == "core-a" and config.listen == "10.0.0.5:50051"
    assert config.database == folder / "core.sqlite3"
    # TLS on both links; every file but the MQTT identity is the core's, shared.
    assert config.tls_cert_file == city.core_dir / "tls" / "server.crt"
    assert config.tls_key_file == city.core_dir / "tls" / "server.key"
    assert config.broker.ca_file == city.core_dir / "tls" / "ca.crt"
    assert (config.broker.cert_file, config.broker.key_file) == (cert, key)
    assert config.broker.port == provisioned.broker_port
    assert config.grant_key_path == city.grant_key
    assert config.checkpoint_key_file == city.checkpoint_key  # named: read, never created
    assert config.storage is not None
    assert config.storage.url == "postgresql://safetynet@db.city.example:5432/safetynet"
    other = CoreConfig.from_toml(city.replica_dir("core-b") / "core.toml")
    assert other.client_id == "core-b" and other.storage is None
    assert other.broker.cert_file != config.broker.cert_file
    assert other.checkpoint_key_file == city.checkpoint_key
    # The city's one grant key and checkpoint key: read, not re-created.
    assert city.grant_key.read_bytes() == grant_key
    assert city.checkpoint_key.read_bytes() == checkpoint_key

    assert main(["provision", "core", "list", "--dir", root]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listing] == [PILOT, "core-a", "core-b"]
    acl = (provisioned.broker_dir / "acl").read_text()
    assert "user core:core-a" in acl and "user core:core-b" in acl


@pytest.mark.parametrize(("argv", "error"), [
    (["add", "Core_A"], "'Core_A' is not a valid id"),
    (["add", "core/a"], "is not a valid id"),
    (["add", PILOT], "is the core from `provision init`"),
    (["add", "core-a"], "is already enrolled"),
    (["add", "core-c", "--storage-url", "postgresql://safetynet:secret@db/safetynet"],
     "holds a password"),
    (["add", "core-c", "--storage-url", "mysql://db/safetynet"], "must be a postgresql:// URL"),
    (["add", "core-c", "--listen", "nowhere"], "--listen must be HOST:PORT"),
    (["add", "core-c", "--valid-days", "0"], "--valid-days must be 1..3650"),
    (["revoke", "core-z"], "is not enrolled in this city"),
    (["revoke", "Nope!"], "is not a valid id"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(
        provisioned: ProvisionedCity, capsys: pytest.CaptureFixture[str],
        argv: list[str], error: str) -> None:
    city = provisioned.city
    add_replica(city, "core-a")
    before = _snapshot(city.root), _snapshot(provisioned.broker_dir)
    capsys.readouterr()
    assert main(["provision", "core", *argv, "--dir", str(city.root)]) == 2
    assert error in capsys.readouterr().err
    assert (_snapshot(city.root), _snapshot(provisioned.broker_dir)) == before


def test_a_revoked_replica_is_not_enrolled_again_or_twice_revoked(
        provisioned: ProvisionedCity, capsys: pytest.CaptureFixture[str]) -> None:
    city, root = provisioned.city, str(provisioned.city.root)
    added = add_replica(city, "core-a")
    assert main(["provision", "core", "revoke", "core-a", "--dir", root]) == 0
    assert "revoked" in capsys.readouterr().out
    assert [r.serial for r in city.revocations()] == [added.record.serial]
    assert "core:core-a" not in (provisioned.broker_dir / "acl").read_text()
    before = _snapshot(city.root)
    assert main(["provision", "core", "revoke", "core-a", "--dir", root]) == 2
    assert "was already revoked" in capsys.readouterr().err
    assert main(["provision", "core", "add", "core-a", "--dir", root]) == 2
    assert "enrol the replacement under a new name" in capsys.readouterr().err
    assert _snapshot(city.root) == before
    assert main(["provision", "core", "list", "--dir", root]) == 0
    assert "core-a" in capsys.readouterr().out.splitlines()[1].split()[0]


# --- against the real Mosquitto -----------------------------------------------------------

async def test_each_replica_has_the_cores_permissions_and_only_its_own_status(
        provisioned: ProvisionedCity, replica_broker: MosquittoBroker) -> None:
    async with _client(provisioned, "core-a") as a, _client(provisioned, "core-b") as b, \
            _client(provisioned, "core") as pilot, _client(provisioned, "alpha") as alpha:
        await alpha.subscribe(topics.CORE_STATUS_TOPICS, qos=1)
        await alpha.subscribe(topics.signal_request("alpha"), qos=1)
        await a.subscribe(topics.agent_status("+"), qos=1)

        # Each forges the others' statuses first, then sends its own on the same connection:
        # a forgery that got through would reach alpha before that sender's own status.
        for client, me in ((a, "core-a"), (b, "core-b"), (pilot, PILOT)):
            for other in {"core-a", "core-b", PILOT} - {me}:
                await client.publish(_status(other), f"{me} as {other}".encode(), qos=1)
            await client.publish(_status(me), me.encode(), qos=1)
        # A replica signals a district as the core does.
        await b.publish(topics.signal_request("alpha"), b"offer from core-b", qos=1)
        seen = await _until_all(alpha, {b"core-a", b"core-b", PILOT.encode(),
                                        b"offer from core-b"})
        assert sorted(seen) == sorted([
            (_status("core-a"), b"core-a"), (_status("core-b"), b"core-b"),
            (_status(PILOT), PILOT.encode()),
            (topics.signal_request("alpha"), b"offer from core-b")])

        # ... and reads every district's reports as the core does.
        await alpha.publish(topics.agent_status("alpha"), b"alpha online", qos=1)
        assert await _until_all(a, {b"alpha online"}) == [
            (topics.agent_status("alpha"), b"alpha online")]


async def test_a_revoked_replica_is_refused_after_a_reload(
        provisioned: ProvisionedCity, replica_broker: MosquittoBroker,
        capsys: pytest.CaptureFixture[str]) -> None:
    def settings(name: str) -> BrokerSettings:
        cert, key = _replica_files(provisioned, name)
        return BrokerSettings(host="127.0.0.1", port=provisioned.broker_port,
                              ca_file=provisioned.city.ca_cert, cert_file=cert, key_file=key)

    assert (await check_broker(settings("core-b"), "core-b")).outcome is Outcome.PASS
    assert main(["provision", "core", "revoke", "core-b",
                 "--dir", str(provisioned.city.root)]) == 0
    assert "reload mosquitto" in capsys.readouterr().out
    await _reload(replica_broker)
    refused = await check_broker(settings("core-b"), "core-b")
    assert (refused.outcome, refused.detail) == (
        Outcome.FAIL, "the broker rejected the agent certificate: revoked")
    assert (await check_broker(settings("core-a"), "core-a")).outcome is Outcome.PASS


async def test_replicas_run_side_by_side_from_their_generated_configs(
        provisioned: ProvisionedCity, replica_broker: MosquittoBroker) -> None:
    """Two replicas and the pilot core, each on its own certificate, on the generated configs:
    each one's retained status (and on close its offline status) reaches the districts."""
    city = provisioned.city
    configs = [CoreConfig.from_toml(city.replica_dir(n) / "core.toml") for n in REPLICAS]
    pilot = replace(CoreConfig.from_toml(city.core_dir / "core.toml"),
                    listen=f"127.0.0.1:{provisioned.core_port}",
                    database=provisioned.root / "pilot" / "core.sqlite3")
    (provisioned.root / "pilot").mkdir()

    def status(payload: bytes) -> bool:
        return mqtt_pb2.CoreStatus.FromString(payload).online

    async with _client(provisioned, "alpha") as alpha:
        await alpha.subscribe(topics.CORE_STATUS_TOPICS, qos=1)
        async with CoreServer(configs[0]) as a, CoreServer(configs[1]) as b, \
                CoreServer(pilot) as p:
            for core in (a, b, p):
                await core.wait_connected()
            online: dict[str, bool] = {}
            async with asyncio.timeout(10):
                async for message in alpha.messages:
                    assert isinstance(message.payload, bytes)
                    replica = topics.core_replica_of(str(message.topic))
                    assert replica is not None
                    online[replica] = status(message.payload)
                    if online == {"core-a": True, "core-b": True, PILOT: True}:
                        break
            await a.close()
            await _wait_for(alpha, lambda topic, payload: topic == _status("core-a")
                            and not status(payload))


async def _wait_for(client: aiomqtt.Client, match: Callable[[str, bytes], bool]) -> None:
    async with asyncio.timeout(10):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            if match(str(message.topic), message.payload):
                return


# --- against real nats-server nodes -------------------------------------------------------

async def test_on_nats_each_replica_is_a_user_with_only_its_own_status(
        provisioned: ProvisionedCity) -> None:
    city = provisioned.city
    for name in (*REPLICAS, "core-c"):
        add_replica(city, name)
    revoke_replica(city, "core-c")
    written = write_city_nats_cluster(city, provisioned.root / "nats", hosts=("n1", "n2", "n3"))
    assert (written.districts, written.replicas) == (2, 2)
    text = written.configs[0].read_text()
    assert "CN=core:core-a,OU=core," in text and "core:core-c" not in text
    assert "safetynet.v1.core.status.core-a" in text

    tls = MqttTls(city.ca_cert, city.broker_dir / "server.crt", city.broker_dir / "server.key")
    contexts = {name: provisioned.tls_context(*_replica_files(provisioned, name))
                for name in (*REPLICAS, "core-c")}
    contexts["alpha"] = provisioned.tls_context(*provisioned.district_files("alpha"))
    async with NatsCluster(city_users(city), tls=tls, probe=contexts["core-a"]) as cluster:
        node = cluster.addresses[0]

        def client(who: str) -> aiomqtt.Client:
            return aiomqtt.Client(node.host, node.port, identifier=f"{who}-test",
                                  tls_context=contexts[who], timeout=5)

        async with client("alpha") as alpha, client("core-a") as a, client("core-b") as b:
            await alpha.subscribe(topics.CORE_STATUS_TOPICS, qos=0)
            await a.publish(_status("core-b"), b"core-a as core-b", qos=1)
            await a.publish(_status("core-a"), b"core-a", qos=1)
            await b.publish(_status("core-a"), b"core-b as core-a", qos=1)
            await b.publish(_status("core-b"), b"core-b", qos=1)
            seen = await _until_all(alpha, {b"core-a", b"core-b"})
            assert sorted(seen) == [(_status("core-a"), b"core-a"), (_status("core-b"), b"core-b")]
        # The revoked replica has no user: its certificate is refused at connection.
        with pytest.raises((aiomqtt.MqttError, ssl.SSLError, OSError)):
            async with client("core-c"):
                pass
