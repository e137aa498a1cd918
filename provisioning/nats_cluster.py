"""The city's clustered MQTT broker on NATS: per-node configs, users and per-district permissions.

NATS server speaks MQTT 3.1.1 and keeps MQTT state (sessions, retained messages, QoS 1
deliveries) in JetStream streams replicated over the cluster, so a retained status and a will
outlive the loss of any one node of three. ``write_nats_cluster_files`` writes, into one folder:

    node-1.conf … node-N.conf   one per node: its NATS client port (loopback only: no user may
                                 use it), its cluster route to every other node, JetStream, and
                                 the MQTT listener (TLS, client certificate required and mapped to
                                 a user: ``verify_and_map``), MQTT streams replicated ``N`` ways
    ca.crt, server.crt, server.key (0600)

Permissions are NATS subjects: an MQTT topic maps to a subject with ``/`` -> ``.``, ``+`` -> ``*``
and ``#`` -> ``>`` (our ids never hold ``.``: protos.topics.ID_PATTERN allows it, but district
and camera ids in the pilot and the city do not use it; a ``.`` in a topic level becomes ``//``).
Each user may publish and subscribe to exactly what the Mosquitto ACL of
``provisioning.broker_config`` allows it, plus subscribe on ``$MQTT.sub.>``, where the server
delivers QoS 1 subscriptions (JetStream consumers). A user is bound to MQTT connections only.

Identity: with ``verify_and_map`` a client certificate maps to the user named by its subject
DN in RFC 4514 form (``CN=agent:gangnam,OU=agent,O=Safety Net Seoul``). The core from
``provision init`` (``CN=safetynet-core``) and every replica from ``provision core add``
(``CN=core:<name>``) are users with the core's permissions, each publishing only its own status
(``broker_config.core_topics``). NATS has no CRL: a revoked district's or replica's user is simply
left out, so after ``provision district|core revoke`` rewrite the files and reload every node
(``nats-server --signal reload=PID`` or SIGHUP).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography import x509

from protos import topics
from provisioning.atomic_write import write_private, write_public
from provisioning.broker_config import agent_topics, core_topics
from provisioning.certificate_authority import (
    CORE_MQTT_IDENTITY,
    DEFAULT_SERVER_NAMES,
    certificate_pem,
    load_certificate,
    new_private_key,
    private_key_pem,
    server_names,
)
from provisioning.city import City
from provisioning.exceptions import ProvisioningError

CLUSTER_NAME = "safetynet"
QOS1_DELIVERY = "$MQTT.sub.>"


def topic_subject(topic_filter: str) -> str:
    """The NATS subject (filter) an MQTT topic (filter) maps to."""
    levels = []
    for level in topic_filter.split("/"):
        if level == "+":
            levels.append("*")
        elif level == "#":
            levels.append(">")
        else:
            levels.append(level.replace(".", "//"))
    return ".".join(levels)


@dataclass(frozen=True)
class NatsUser:
    """One MQTT identity: a certificate DN (TLS) or a name with a password (tests, no TLS)."""

    name: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    password: str | None = field(default=None, repr=False)

    def config(self) -> dict[str, object]:
        entry: dict[str, object] = {"user": self.name}
        if self.password is not None:
            entry["password"] = self.password
        entry["permissions"] = {
            "publish": {"allow": [topic_subject(t) for t in self.publish]},
            "subscribe": {"allow": [*(topic_subject(t) for t in self.subscribe), QOS1_DELIVERY]},
        }
        entry["allowed_connection_types"] = ["MQTT"]
        return entry


def core_user(name: str, password: str | None = None, *,
              replica: str = topics.ANY) -> NatsUser:
    """The core, with the permissions of ``broker_config.core_topics``: it publishes the status
    of ``replica`` (its ``client_id``; by default any replica's)."""
    reads, writes = core_topics(replica)
    return NatsUser(name, publish=writes, subscribe=reads, password=password)


def agent_user(name: str, district: str, password: str | None = None) -> NatsUser:
    """A district's agent, with the permissions of ``broker_config.agent_topics``."""
    reads, writes = agent_topics(district)
    return NatsUser(name, publish=writes, subscribe=reads, password=password)


@dataclass(frozen=True)
class NatsNode:
    """Where one node listens. ``client_port`` is NATS's own protocol, bound to ``client_host``."""

    name: str
    host: str
    mqtt_port: int
    cluster_port: int
    client_port: int
    store_dir: Path
    client_host: str = "127.0.0.1"
    http_port: int | None = None


@dataclass(frozen=True)
class MqttTls:
    """The MQTT listener's TLS files; client certificates are required and mapped to users."""

    ca_file: Path
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class NatsClusterSpec:
    nodes: tuple[NatsNode, ...]
    users: tuple[NatsUser, ...]
    tls: MqttTls | None = None
    name: str = CLUSTER_NAME

    @property
    def replicas(self) -> int:
        return min(3, len(self.nodes))


def _q(value: object) -> str:
    return json.dumps(value)  # NATS config accepts JSON values


def node_config_text(spec: NatsClusterSpec, node: NatsNode) -> str:
    """The configuration of ``node`` in ``spec`` (NATS config syntax; values as JSON)."""
    routes = [f"nats-route://{n.host}:{n.cluster_port}" for n in spec.nodes if n != node]
    lines = [
        f"# NATS node {node.name} of the Safety Net cluster {spec.name!r}: MQTT for agents and",
        "# the core, state in JetStream replicated over the cluster. Written by safetynet",
        "# provisioning; rewrite (do not edit) after district changes, then reload every node.",
        f"server_name: {_q(node.name)}",
        f"host: {_q(node.client_host)}",
        f"port: {node.client_port}",
        *([f"http: {_q(f'{node.client_host}:{node.http_port}')}"] if node.http_port else []),
        f"jetstream {{ store_dir: {_q(str(node.store_dir))} }}",
        f"cluster {{ name: {_q(spec.name)}, listen: {_q(f'{node.host}:{node.cluster_port}')},"
        f" routes: {_q(routes)} }}",
        "mqtt {",
        f"  listen: {_q(f'{node.host}:{node.mqtt_port}')}",
        f"  stream_replicas: {spec.replicas}",
    ]
    if spec.tls is not None:
        lines += [
            "  tls {",
            f"    ca_file: {_q(str(spec.tls.ca_file))}",
            f"    cert_file: {_q(str(spec.tls.cert_file))}",
            f"    key_file: {_q(str(spec.tls.key_file))}",
            "    verify_and_map: true",
            "    timeout: 2.0",
            "  }",
        ]
    lines += ["}", f"authorization {{ users: {_q([u.config() for u in spec.users])} }}", ""]
    return "\n".join(lines)


def subject_dn(certificate: x509.Certificate) -> str:
    """The user name NATS maps a client certificate to (``verify_and_map``)."""
    return certificate.subject.rfc4514_string()


def city_users(city: City) -> tuple[NatsUser, ...]:
    """The core, every non-revoked core replica and district, named by their certificates'
    subject DNs."""
    core_cert = city.core_dir / "tls" / "mqtt-client.crt"
    if not core_cert.is_file():
        raise ProvisioningError(f"{core_cert}: missing; run safetynet provision init first")
    users = [core_user(subject_dn(load_certificate(core_cert)), replica=CORE_MQTT_IDENTITY)]
    for replica in city.replicas():
        if replica.revoked:
            continue
        replica_cert = city.replica_dir(replica.name) / "tls" / "mqtt-client.crt"
        users.append(core_user(subject_dn(load_certificate(replica_cert)), replica=replica.name))
    for record in city.districts():
        if record.revoked:
            continue
        agent_cert = city.district_dir(record.district_id) / "tls" / "agent.crt"
        users.append(agent_user(subject_dn(load_certificate(agent_cert)), record.district_id))
    return tuple(users)


@dataclass(frozen=True)
class NatsClusterWritten:
    out_dir: Path
    configs: tuple[Path, ...]
    districts: int
    replicas: int = 0


def cluster_nodes(hosts: Sequence[str], *, install_dir: Path, mqtt_port: int = 8883,
                  cluster_port: int = 6222, client_port: int = 4222) -> tuple[NatsNode, ...]:
    """One node per host (``hosts`` are the nodes' names or addresses the others route to)."""
    if len(hosts) < 3 or len(set(hosts)) != len(hosts):
        raise ProvisioningError("a NATS cluster that survives a node loss needs 3 or more "
                                f"distinct hosts, got {list(hosts)}")
    return tuple(NatsNode(f"node-{i}", host, mqtt_port, cluster_port, client_port,
                          install_dir / "jetstream") for i, host in enumerate(hosts, start=1))


def write_nats_cluster_files(city: City, out_dir: Path, *, nodes: Iterable[NatsNode],
                             install_dir: Path, server_cert: Path,
                             server_key: Path) -> NatsClusterWritten:
    """Write every node's config and the TLS files into ``out_dir`` (paths: ``install_dir``).

    ``server_cert``/``server_key`` are the broker's certificate (issued by ``provision broker``
    for every node name) and key.
    """
    out_dir = out_dir.resolve()
    users = city_users(city)
    tls = MqttTls(install_dir / "ca.crt", install_dir / "server.crt", install_dir / "server.key")
    spec = NatsClusterSpec(tuple(nodes), users, tls)
    write_public(out_dir / "ca.crt", city.ca_cert.read_bytes())
    write_public(out_dir / "server.crt", server_cert.read_bytes())
    write_private(out_dir / "server.key", server_key.read_bytes())
    configs = []
    for node in spec.nodes:
        path = out_dir / f"{node.name}.conf"
        write_public(path, node_config_text(spec, node))
        configs.append(path)
    replicas = sum(1 for r in city.replicas() if not r.revoked)
    return NatsClusterWritten(out_dir, tuple(configs), len(users) - 1 - replicas, replicas)


def default_node_hosts(city: City, nodes: int) -> tuple[str, ...]:
    """``nats-1.<broker host>`` … when the operator names no hosts."""
    return tuple(f"nats-{i}.{city.settings().broker_host}" for i in range(1, nodes + 1))


def write_city_nats_cluster(city: City, out_dir: Path, *, hosts: Sequence[str],
                            mqtt_port: int = 8883,
                            install_dir: Path | None = None) -> NatsClusterWritten:
    """``provision broker --engine nats``: a server certificate for every node name (and the
    city's broker name, which agents may keep using through DNS), then every node's files."""
    install = install_dir if install_dir is not None else out_dir.resolve()
    nodes = cluster_nodes(hosts, install_dir=install, mqtt_port=mqtt_port)
    names = tuple(dict.fromkeys([*DEFAULT_SERVER_NAMES, city.settings().broker_host, *hosts]))
    key_file = city.broker_dir / "nats-server.key"
    cert_file = city.broker_dir / "nats-server.crt"
    if not cert_file.is_file() or set(server_names(load_certificate(cert_file))) != set(names):
        key = new_private_key()
        certificate = city.authority().issue_server(key.public_key(), "safetynet-broker", names)
        write_private(key_file, private_key_pem(key))
        write_public(cert_file, certificate_pem(certificate))
    written = write_nats_cluster_files(city, out_dir, nodes=nodes, install_dir=install,
                                       server_cert=cert_file, server_key=key_file)
    # Bundles and replica configs written from now on list every node (``[broker] hosts``).
    city.save_settings(replace(city.settings(), broker_nodes=tuple(
        f"{node.host}:{node.mqtt_port}" for node in nodes)))
    return written
