"""The NATS cluster files provisioning writes: TLS with certificates mapped to users, and each
district confined to its own topics, checked against real nats-server nodes."""

from __future__ import annotations

import asyncio
import ssl

import aiomqtt
import pytest

from protos import topics
from provisioning.certificate_authority import load_certificate
from provisioning.exceptions import ProvisioningError
from provisioning.nats_cluster import (
    MqttTls,
    city_users,
    cluster_nodes,
    subject_dn,
    topic_subject,
    write_city_nats_cluster,
)
from safetynet.nats_broker import NatsCluster
from tests.provisioning.conftest import ProvisionedCity


def test_topics_map_to_subjects() -> None:
    assert topic_subject("safetynet/v1/districts/+/cameras/+/status") == \
        "safetynet.v1.districts.*.cameras.*.status"
    assert topic_subject("a/#") == "a.>"
    assert topic_subject("a/b.c") == "a.b//c"


def test_written_files_list_every_node_and_district(provisioned: ProvisionedCity) -> None:
    out = provisioned.root / "nats"
    written = write_city_nats_cluster(provisioned.city, out, hosts=("n1", "n2", "n3"))
    assert [p.name for p in written.configs] == ["node-1.conf", "node-2.conf", "node-3.conf"]
    assert written.districts == 2
    text = written.configs[0].read_text()
    assert '"nats-route://n2:6222", "nats-route://n3:6222"' in text
    assert "verify_and_map: true" in text and "stream_replicas: 3" in text
    assert "safetynet.v1.districts.alpha.agent.status" in text
    assert (out / "server.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(ProvisioningError, match="3 or more"):
        cluster_nodes(("n1", "n1", "n2"), install_dir=out)


async def test_certificates_map_to_users_and_districts_stay_apart(
        provisioned: ProvisionedCity) -> None:
    city = provisioned.city
    tls = MqttTls(city.ca_cert, city.broker_dir / "server.crt", city.broker_dir / "server.key")
    core_tls = city.core_dir / "tls"
    core = provisioned.tls_context(core_tls / "mqtt-client.crt", core_tls / "mqtt-client.key")
    async with NatsCluster(city_users(city), tls=tls, probe=core) as cluster:
        node = cluster.addresses[1]

        def client(who: str, identifier: str) -> aiomqtt.Client:
            context: ssl.SSLContext = core if who == "core" else provisioned.tls_context(
                *provisioned.district_files(who))
            return aiomqtt.Client(node.host, node.port, identifier=identifier,
                                  tls_context=context, timeout=5)

        async with client("core", "core") as reader:
            await reader.subscribe(topics.agent_status("+"), qos=0)
            async with client("bravo", "bravo-agent") as bravo:
                await bravo.publish(topics.agent_status("alpha"), b"forged", qos=1)
                await bravo.publish(topics.agent_status("bravo"), b"bravo", qos=1)
                denied = await bravo.subscribe(topics.signal_request("alpha"), qos=0)
                assert [c.is_failure for c in denied] == [True]
            async with asyncio.timeout(5):
                message = await anext(aiter(reader.messages))
            assert (str(message.topic), message.payload) == (topics.agent_status("bravo"),
                                                             b"bravo")
        # A certificate the cluster has no user for (not from the city CA) is refused.
        stranger = provisioned.tls_context(None, None)
        with pytest.raises((aiomqtt.MqttError, ssl.SSLError, OSError)):
            async with aiomqtt.Client(node.host, node.port, identifier="x", tls_context=stranger,
                                      timeout=5):
                pass


def test_user_names_are_the_certificate_dns(provisioned: ProvisionedCity) -> None:
    cert, _ = provisioned.district_files("alpha")
    dn = subject_dn(load_certificate(cert))
    assert dn.startswith("CN=agent:alpha,")
    assert dn in [u.name for u in city_users(provisioned.city)]


def test_configs_written_after_the_cluster_list_every_node(provisioned: ProvisionedCity) -> None:
    from cloud_core.config import CoreConfig
    from edge_agent.config import AgentConfig
    from provisioning.core_replicas import add_replica
    from provisioning.district_enrolment import add_district

    city = provisioned.city
    write_city_nats_cluster(city, provisioned.root / "nats", hosts=("n1", "n2", "n3"),
                            mqtt_port=8883)
    assert city.settings().broker_nodes == ("n1:8883", "n2:8883", "n3:8883")
    replica = CoreConfig.from_toml(add_replica(city, "core-a").config)
    assert [(a.host, a.port) for a in replica.broker.hosts] == [
        ("n1", 8883), ("n2", 8883), ("n3", 8883)]
    assert replica.broker.max_subscribe_qos == 0  # what the core needs on NATS
    csv = provisioned.root / "alpha.csv"
    enrolled = add_district(city, "alpha", name="Alpha-gu", cameras_csv=csv, update=True)
    agent = AgentConfig.from_toml(enrolled.bundle.folder / "agent.toml")
    assert [a.host for a in agent.broker.hosts] == ["n1", "n2", "n3"]
