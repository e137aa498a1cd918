"""The city's Mosquitto configuration: TLS only, certificates as identities, one ACL block each.

``write_broker_files`` writes, into one folder:

    safetynet.conf   the listener: TLS only (no plain listener), client certificate required,
                     its subject CN used as the user name (and as the client id, so no agent
                     can take over another's session), the CRL, the ACL, anonymous refused
    acl              default deny; the core reads every district's reports and writes any
                     district's signalling; each agent only its own district, in its direction
    crl.pem          revoked agent certificates (`provision district revoke`)
    safetynet-broker.service  the systemd unit: Mosquitto with safetynet.conf, restarts on
                     failure, reload = SIGHUP (provisioning/service_units.py)
    ca.crt, server.crt, server.key (0600)

ACL design: an agent's identity is ``agent:<district>`` (certificate CN), which does not map
directly to its topic prefix, so there is no ``pattern … %u`` rule; each district gets an
explicit ``user`` block, regenerated whenever a district is added or revoked (a revoked district's
block goes away, so even a connection opened before the revocation can no longer publish or read
once Mosquitto reloads). The same holds for the core: ``safetynet-core`` (``provision init``) and
each replica ``core:<name>`` (``provision core add``) get a ``user`` block with the core's
permissions, except that each may publish only its own retained status
``safetynet/v1/core/status/<client id>`` (``safetynet-core``'s is the core config's default
``client_id``, ``safetynet-core``; a replica's is its name). A ``pattern … %c`` rule could not do
it: ``use_username_as_clientid`` makes the broker's client id the CN ``core:<name>``, while the
topic is named by the ``client_id`` in core.toml.

Mosquitto reads ``crlfile`` and ``acl_file`` at start and again on SIGHUP (``systemctl reload
mosquitto``); verified with Mosquitto 2.0.11: after a SIGHUP a revoked certificate can no longer
connect, and a connection it already had is left open but, its ACL block gone, gets nothing and
can publish nothing. Without a reload the broker keeps the old CRL and ACL.

The CRL carries a next-update date (a year ahead): past it OpenSSL refuses every client
certificate. Run ``safetynet provision broker`` again (it rewrites the CRL) well before then.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from protos import topics
from provisioning.atomic_write import write_private, write_public
from provisioning.certificate_authority import (
    CORE_MQTT_IDENTITY,
    DEFAULT_SERVER_NAMES,
    agent_identity,
    certificate_pem,
    core_replica_identity,
    load_certificate,
    new_private_key,
    private_key_pem,
    server_names,
)
from provisioning.city import BrokerFiles, City, DistrictRecord, ReplicaRecord
from provisioning.service_units import BROKER_UNIT, broker_unit_text

CONFIG_NAME = "safetynet.conf"

# Sized for the core's one connection, which receives every district's statuses (see
# mosquitto_config_text). A wider in-flight window lets the broker stream to it (QoS 1 topics)
# instead of waiting for every 20 acknowledgements.
CITY_QUEUE_LIMITS = (
    "max_inflight_messages 1000",
    "max_queued_messages 300000",
)
ACL_NAME = "acl"
CRL_NAME = "crl.pem"


def grants_revoked(district: str) -> str:
    # Core -> agent revocation notices (announced in docs/mqtt.md as "later"); allowed already.
    return f"{topics.PREFIX}/{district}/grants/revoked"


def core_topics(replica: str = topics.ANY) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(reads, writes) of the core: every district's reports in, every district's signalling out,
    and the retained status of ``replica`` (its ``client_id``; ``ANY``: every replica's).

    The one statement of the core's permissions; Mosquitto's ACL and NATS's users are both
    written from it.
    """
    every = "+"
    reads: tuple[str, ...] = (
        topics.agent_status(every), topics.camera_status(every, "+"),
        topics.camera_changes(every), topics.heartbeat(every),
        topics.signal_response(every), topics.session_events(every), topics.evidence_events(every))
    writes: tuple[str, ...] = (topics.signal_request(every), grants_revoked(every),
                               topics.audit_checkpoint(every),
                               topics.core_status_route(replica).topic)
    # Cloud relays (docs/cloud-relay.md): their registrations and answers in, signalling out.
    reads += tuple(r.topic for r in topics.CORE_RELAY_ROUTES)
    writes += (topics.relay_route(topics.Kind.SIGNAL_REQUEST, every).topic,)
    return reads, writes


def relay_identity(relay_id: str) -> str:
    """A cloud relay's broker identity (its certificate's CN, or its user name)."""
    return f"relay:{relay_id}"


def relay_topics(relay_id: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(reads, writes) of a cloud relay: its own subtree only, never a district's topics."""
    kind = topics.Kind
    reads = (topics.relay_route(kind.SIGNAL_REQUEST, relay_id).topic,)
    writes = tuple(topics.relay_route(k, relay_id).topic
                   for k in (kind.RELAY_STATUS, kind.SIGNAL_RESPONSE, kind.SESSION_EVENTS))
    return reads, writes


def relay_acl(relay_id: str, user: str | None = None) -> list[str]:
    """A cloud relay's Mosquitto ACL lines (``relay_topics``)."""
    reads, writes = relay_topics(relay_id)
    return [f"user {user or relay_identity(relay_id)}",
            *(f"topic write {t}" for t in writes), *(f"topic read {t}" for t in reads)]


def agent_topics(district: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(reads, writes) of a district's agent: its own signalling in, its own reports out. Only."""
    reads = (topics.signal_request(district), grants_revoked(district),
             topics.audit_checkpoint(district), topics.CORE_STATUS_TOPICS)
    writes = (topics.agent_status(district), topics.camera_status(district, "+"),
              topics.camera_changes(district),
              topics.heartbeat(district), topics.signal_response(district),
              topics.session_events(district), topics.evidence_events(district))
    return reads, writes


def core_acl(user: str = CORE_MQTT_IDENTITY, replica: str = topics.ANY) -> list[str]:
    """The core's Mosquitto ACL lines (``core_topics``) for ``user``, publishing the status of
    ``replica``."""
    reads, writes = core_topics(replica)
    return [f"user {user}",
            *(f"topic read {t}" for t in reads), *(f"topic write {t}" for t in writes)]


def agent_acl(district: str, user: str | None = None) -> list[str]:
    """A district agent's Mosquitto ACL lines (``agent_topics``)."""
    reads, writes = agent_topics(district)
    return [f"user {user or agent_identity(district)}",
            *(f"topic write {t}" for t in writes), *(f"topic read {t}" for t in reads)]


def acl_text(city_name: str, districts: Iterable[DistrictRecord],
             relays: Iterable[str] = (), replicas: Iterable[ReplicaRecord] = ()) -> str:
    lines = [
        f"# Mosquitto ACL of the Safety Net city {city_name!r}. Written by `safetynet provision`;",
        "# rewritten on every `provision district|core add|revoke` - do not edit by hand.",
        "# Default deny: a client may use only the topics listed under its user name, which is",
        "# the CN of its certificate (use_identity_as_username).",
        "",
        "# The cloud core: reads what every district reports, sends signalling to any district,",
        "# publishes its own status (client_id safetynet-core, the core config's default).",
        *core_acl(CORE_MQTT_IDENTITY, replica=CORE_MQTT_IDENTITY),
    ]
    for replica in replicas:
        if replica.revoked:
            continue
        comment = (f"# Core replica {replica.name} (client_id {replica.name}): the core's "
                   f"permissions, its own status only; serial {replica.serial:x}, valid until "
                   f"{replica.not_after}")
        lines += ["", comment, *core_acl(core_replica_identity(replica.name),
                                         replica=replica.name)]
    for record in districts:
        if record.revoked:
            continue
        comment = (f"# District {record.district_id} ({record.name}): certificate serial "
                   f"{record.serial:x}, valid until {record.not_after}")
        lines += ["", comment, *agent_acl(record.district_id)]
    for relay_id in relays:
        lines += ["", f"# Cloud relay {relay_id}: its own topics only", *relay_acl(relay_id)]
    return "\n".join(lines) + "\n"


def mosquitto_config_text(city_name: str, *, install_dir: Path, port: int, bind: str) -> str:
    where = install_dir
    return "\n".join([
        f"# Mosquitto configuration of the Safety Net city {city_name!r}, written by",
        "# `safetynet provision broker`. TLS only: there is no plain listener. Every client needs",
        "# a certificate from the city CA; its subject CN is its user name and client id.",
        "# After `safetynet provision district|core add|revoke` rewrite acl and crl.pem, reload:",
        "#   systemctl reload safetynet-broker   (the unit written beside this file; it sends",
        "#   SIGHUP: Mosquitto re-reads the ACL and the CRL; restarts on failure)",
        "allow_anonymous false",
        f"acl_file {where / ACL_NAME}",
        "",
        f"listener {port} {bind}",
        f"cafile {where / 'ca.crt'}",
        f"certfile {where / 'server.crt'}",
        f"keyfile {where / 'server.key'}",
        f"crlfile {where / CRL_NAME}",
        "tls_version tlsv1.2",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "",
        "# The core receives every district's statuses on its one connection. Past",
        "# max_inflight_messages + max_queued_messages waiting for a client (defaults 20 + 1000,",
        "# QoS 0 counted too) Mosquitto DROPS what follows, logging only 'Outgoing messages are",
        "# being dropped' at notice. A city-wide reconnect is 68,000 retained statuses at once, and",
        "# the core re-subscribing is sent every retained one again: room for a few such bursts",
        "# (~120 bytes each, ~40 MB at worst; agents receive only their signalling).",
        *CITY_QUEUE_LIMITS,
        "",
    ])


@dataclass(frozen=True)
class BrokerWritten:
    out_dir: Path
    config: Path
    names: tuple[str, ...]
    districts: int


def write_broker_files(city: City, out_dir: Path, *, port: int = 8883, bind: str = "0.0.0.0",
                       install_dir: Path | None = None,
                       extra_names: Sequence[str] = (),
                       key_owner: str | None = "mosquitto") -> BrokerWritten:
    """Issue (or reuse) the broker's server certificate and write all its files to ``out_dir``.

    ``install_dir`` is where the files will live on the broker host (the paths in
    safetynet.conf); by default ``out_dir`` itself. The choice is remembered, so later district
    changes rewrite ``acl`` and ``crl.pem`` there. Mosquitto drops root before it reads its key,
    so when run as root with a ``key_owner`` user present, ``server.key`` (0600) is given to it.
    """
    settings = city.settings()
    out_dir = out_dir.resolve()
    install = install_dir if install_dir is not None else out_dir
    names = tuple(dict.fromkeys([*DEFAULT_SERVER_NAMES, settings.broker_host, *extra_names]))
    key_file, cert_file = city.broker_dir / "server.key", city.broker_dir / "server.crt"
    if not cert_file.is_file() or set(server_names(load_certificate(cert_file))) != set(names):
        key = new_private_key()
        certificate = city.authority().issue_server(key.public_key(), "safetynet-broker", names)
        write_private(key_file, private_key_pem(key))
        write_public(cert_file, certificate_pem(certificate))
    write_public(out_dir / "ca.crt", city.ca_cert.read_bytes())
    write_public(out_dir / "server.crt", cert_file.read_bytes())
    write_private(out_dir / "server.key", key_file.read_bytes())
    _give_key_to(out_dir / "server.key", key_owner)
    config = out_dir / CONFIG_NAME
    write_public(config, mosquitto_config_text(settings.name, install_dir=install, port=port,
                                               bind=bind))
    write_public(out_dir / BROKER_UNIT,
                 broker_unit_text(settings.name, config=install / CONFIG_NAME))
    files = BrokerFiles(out_dir=str(out_dir), install_dir=str(install), port=port, bind=bind)
    city.save_settings(replace(settings, broker_files=files))
    districts = refresh_access_files(city)
    return BrokerWritten(out_dir, config, names, districts)


def refresh_access_files(city: City) -> int:
    """Rewrite the CRL (fresh dates) and, where `provision broker` wrote, the ACL and CRL.

    Returns the number of districts the ACL admits.
    """
    crl = city.write_crl()
    records = list(city.districts())
    files = city.settings().broker_files
    if files is not None:
        out = Path(files.out_dir)
        write_public(out / ACL_NAME, acl_text(city.settings().name, records,
                                              replicas=city.replicas()))
        write_public(out / CRL_NAME, crl)
    return sum(1 for r in records if not r.revoked)


def _give_key_to(path: Path, user: str | None) -> None:
    if user is None or os.geteuid() != 0:
        return
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return  # not the broker host: the install steps say to chown it there
    os.chown(path, entry.pw_uid, entry.pw_gid)
