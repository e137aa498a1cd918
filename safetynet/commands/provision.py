"""``safetynet provision …``: what the city's operators run (the city CA, district enrolment and
bundles, the Mosquitto config, revocation). The work itself is in ``provisioning``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetynet.commands.arguments import Subcommands, host_port
from safetynet.commands.exceptions import EXIT_FAILED, EXIT_OK, UserError

if TYPE_CHECKING:
    from provisioning.city import City

CITY_DIR_ENV = "SAFETYNET_CITY_DIR"
DIR_HELP = f"the city folder (default ${CITY_DIR_ENV} or the current folder)"


def register(subcommands: Subcommands) -> None:
    """Add ``safetynet provision init|district add|revoke|list|core add|revoke|list|broker``."""
    p = subcommands.add_parser(
        "provision", help="city CA, district enrolment and bundles, broker config",
        description="What the city's operators run: create the city's certificate authority, "
                    "enrol districts (certificate, camera inventory, one bundle for the "
                    "district's IT), give each core replica its MQTT identity, write the "
                    "broker config and revoke districts or replicas.")
    what = p.add_subparsers(dest="provision_command", metavar="WHAT", required=True)
    _register_init(what)
    q = what.add_parser("district", help="enrol, update, list or revoke districts",
                        description="Enrol a district and write its agent bundle, or revoke it.")
    district = q.add_subparsers(dest="district_command", metavar="ACTION", required=True)
    _register_district_add(district)
    _register_district_revoke_and_list(district)
    _register_core(what)
    _register_broker(what)
    _register_local_operator(what)


def _city(args: argparse.Namespace) -> City:
    from provisioning.city import City
    from provisioning.exceptions import CityError

    try:
        return City.open(Path(args.dir or os.environ.get(CITY_DIR_ENV) or "."))
    except CityError as exc:
        raise UserError(str(exc)) from exc


def _list_files(root: Path) -> None:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        mode = path.stat().st_mode & 0o777
        print(f"  {mode:04o}  {path.relative_to(root)}")


def _broker_note(updated: bool) -> None:
    if updated:
        print("broker ACL and CRL rewritten: reload mosquitto (systemctl reload "
              "safetynet-broker) for them to take effect")
    else:
        print("no broker files yet: run safetynet provision broker --out DIR")


# --- provision init -----------------------------------------------------------------------

def _register_init(what: Subcommands) -> None:
    q = what.add_parser(
        "init", help="create the city CA, the core's certificates and grant key",
        description="Create the city folder: a dedicated certificate authority, the core's gRPC "
                    "server certificate and MQTT client certificate, the grant-signing key and a "
                    "core config. Private keys are written 0600 and never printed.")
    q.add_argument("--dir", required=True, metavar="CITY", help="folder to create the city in")
    q.add_argument("--city-name", default="Seoul", help="the city's name (default Seoul)")
    q.add_argument("--server-name", action="append", default=[], metavar="NAME",
                   help="DNS name or IP of the core (and broker) besides localhost/127.0.0.1 "
                        "(repeatable; the first is the default address given to agents)")
    q.add_argument("--broker", metavar="HOST:PORT", help="where agents reach the broker "
                   "(default FIRST_SERVER_NAME:8883)")
    q.add_argument("--core", metavar="HOST:PORT", help="where agents and viewers reach the core "
                   "(default FIRST_SERVER_NAME:50051)")
    q.add_argument("--ca-days", type=int, default=3650, help="CA lifetime in days (default 3650)")
    q.set_defaults(func=cmd_provision_init)


def cmd_provision_init(args: argparse.Namespace) -> int:
    """Create the city folder and list what was written, with its file modes."""
    from provisioning.city import init_city
    from provisioning.exceptions import ProvisioningError

    broker = host_port(args.broker, "--broker") if args.broker else None
    core = host_port(args.core, "--core") if args.core else None
    try:
        city = init_city(Path(args.dir), city_name=args.city_name,
                         server_names=tuple(args.server_name), broker=broker, core=core,
                         ca_days=args.ca_days)
    except ProvisioningError as exc:
        raise UserError(str(exc)) from exc
    settings = city.settings()
    print(f"city {settings.name!r} set up in {city.root}")
    _list_files(city.root)
    print(f"\nagents will reach the broker at {settings.broker_host}:{settings.broker_port} and "
          f"the core at {settings.core_address}.")
    print("next: safetynet provision broker --out DIR, then safetynet provision district add …")
    print("keep this folder safe and backed up: it holds the city CA key and the grant key.")
    return EXIT_OK


# --- provision district -------------------------------------------------------------------

def _register_district_add(district: Subcommands) -> None:
    r = district.add_parser(
        "add", help="validate the inventory, issue the agent certificate, write the bundle",
        description="Validate the district's camera inventory (every bad row is reported with "
                    "its line; nothing is imported from a file with one), issue the agent's "
                    "certificate (CN agent:ID), and write the bundle as a folder and a tar.gz. "
                    "CSV columns: id,name,lat,lon,stream_url,type[,address,notes] "
                    "(see runtime/camera_inventory.py).")
    r.add_argument("district_id", metavar="ID", help="district id, e.g. gangnam")
    r.add_argument("--name", required=True, help="the district's name, e.g. Gangnam-gu")
    r.add_argument("--cameras", required=True, metavar="FILE.csv", help="the camera inventory")
    r.add_argument("--dir", metavar="CITY", help=DIR_HELP)
    r.add_argument("--valid-days", type=int, default=365,
                   help="agent certificate lifetime in days (default 365)")
    r.add_argument("--update", action="store_true",
                   help="the district exists: replace its inventory and rebuild its bundle")
    r.add_argument("--renew", action="store_true", help="with --update: issue a new certificate")
    r.add_argument("--advertise", action="append", default=[], metavar="IP",
                   help="the agent's ICE host address (repeatable; default every interface)")
    r.add_argument("--out", metavar="DIR", help="where to write the bundle (default CITY/bundles)")
    r.set_defaults(func=cmd_district_add)


def _register_district_revoke_and_list(district: Subcommands) -> None:
    r = district.add_parser(
        "revoke", help="revoke the district's agent certificate (CRL) and drop its ACL",
        description="Put the district's agent certificate on the city CRL and remove its ACL "
                    "block; then reload mosquitto (SIGHUP) for it to take effect.")
    r.add_argument("district_id", metavar="ID")
    r.add_argument("--dir", metavar="CITY", help=DIR_HELP)
    r.set_defaults(func=cmd_district_revoke)
    r = district.add_parser("list", help="list enrolled districts",
                            description="List the city's districts, certificates and camera counts.")
    r.add_argument("--dir", metavar="CITY", help=DIR_HELP)
    r.set_defaults(func=cmd_district_list)


def cmd_district_add(args: argparse.Namespace) -> int:
    """Enrol (or update) a district; a rejected inventory lists every problem and exits 1."""
    from provisioning.district_enrolment import add_district
    from provisioning.exceptions import InventoryRejected, ProvisioningError
    from safetynet.progress import progress_bar

    city = _city(args)
    try:
        with progress_bar(f"Checking {Path(args.cameras).name}") as advance:
            enrolled = add_district(
                city, args.district_id, name=args.name, cameras_csv=Path(args.cameras),
                valid_days=args.valid_days, update=args.update, renew=args.renew,
                advertise=tuple(args.advertise), out_dir=Path(args.out) if args.out else None,
                progress=advance)
    except InventoryRejected as exc:
        print(f"safetynet: {exc.path}: {len(exc.problems)} problem(s); nothing imported, "
              "the stored inventory is unchanged:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_FAILED
    except ProvisioningError as exc:
        raise UserError(str(exc)) from exc
    record = enrolled.record
    certificate = ("new certificate" if enrolled.new_certificate else "certificate kept")
    print(f"district {record.district_id} ({record.name}): {record.cameras} cameras, "
          f"{certificate} agent:{record.district_id} serial {record.serial:x}, "
          f"valid until {record.not_after}")
    print(f"bundle: {enrolled.bundle.tarball}")
    print(f"        {enrolled.bundle.folder}/")
    _broker_note(enrolled.broker_updated)
    return EXIT_OK


def cmd_district_revoke(args: argparse.Namespace) -> int:
    """Revoke a district's agent certificate and drop its ACL block."""
    from provisioning.district_enrolment import revoke_district
    from provisioning.exceptions import ProvisioningError

    city = _city(args)
    try:
        revoked = revoke_district(city, args.district_id)
    except ProvisioningError as exc:
        raise UserError(str(exc)) from exc
    print(f"district {args.district_id}: certificate serial {revoked.record.serial:x} revoked; "
          f"its ACL block removed; CRL: {city.crl}")
    _broker_note(revoked.broker_updated)
    print("mosquitto reads the CRL and ACL at start and on SIGHUP: until reloaded it still "
          "admits the revoked certificate")
    return EXIT_OK


def cmd_district_list(args: argparse.Namespace) -> int:
    """One line per enrolled district: cameras, certificate serial and state, name."""
    city = _city(args)
    for record in city.districts():
        state = f"REVOKED {record.revoked_at}" if record.revoked else f"valid until {record.not_after}"
        print(f"{record.district_id:<16} {record.cameras:>6} cameras  serial {record.serial:x}  "
              f"{state}  {record.name}")
    return EXIT_OK


# --- provision core -----------------------------------------------------------------------

def _register_core(what: Subcommands) -> None:
    q = what.add_parser(
        "core", help="enrol, list or revoke core replicas (one MQTT identity each)",
        description="Give each core replica its own MQTT identity: a client certificate from "
                    "the city CA (CN core:NAME) and a core.toml with client_id NAME that uses the "
                    "core's shared files (gRPC certificate, grant key, checkpoint key). The "
                    "broker's ACL lets a replica publish only its own status topic.")
    core = q.add_subparsers(dest="core_command", metavar="ACTION", required=True)
    r = core.add_parser(
        "add", help="issue a replica's MQTT certificate and write its core.toml",
        description="Issue replica NAME its MQTT client certificate (CN core:NAME) and write "
                    "CITY/core/replicas/NAME/ (tls/mqtt-client.key 0600, .crt, core.toml with "
                    "client_id NAME); then rewrite the broker's ACL. Run the replica from the "
                    "core's folder: safetynet core --config replicas/NAME/core.toml.")
    r.add_argument("name", metavar="NAME", help="the replica's name and client id, e.g. core-a")
    r.add_argument("--dir", metavar="CITY", help=DIR_HELP)
    r.add_argument("--listen", metavar="HOST:PORT",
                   help="the replica's gRPC address (default 0.0.0.0:<the city's core port>)")
    r.add_argument("--storage-url", metavar="URL",
                   help="the PostgreSQL every replica shares, without a password "
                        "(postgresql://user@host:5432/db; docs/scale-out.md)")
    r.add_argument("--valid-days", type=int, default=825,
                   help="certificate lifetime in days (default 825)")
    r.set_defaults(func=cmd_core_add)
    r = core.add_parser(
        "revoke", help="revoke a replica's MQTT certificate (CRL) and drop its ACL",
        description="Put the replica's MQTT certificate on the city CRL and remove it from the "
                    "broker's ACL (and NATS users); then reload the broker for it to take effect.")
    r.add_argument("name", metavar="NAME")
    r.add_argument("--dir", metavar="CITY", help=DIR_HELP)
    r.set_defaults(func=cmd_core_revoke)
    r = core.add_parser("list", help="list the core's MQTT identities",
                        description="List the core from `provision init` and every replica: "
                                    "client id, certificate serial and state.")
    r.add_argument("--dir", metavar="CITY", help=DIR_HELP)
    r.set_defaults(func=cmd_core_list)


def cmd_core_add(args: argparse.Namespace) -> int:
    """Enrol a core replica and print where its files are."""
    from provisioning.core_replicas import add_replica
    from provisioning.exceptions import ProvisioningError

    city = _city(args)
    try:
        added = add_replica(city, args.name, listen=args.listen, storage_url=args.storage_url,
                            valid_days=args.valid_days)
    except ProvisioningError as exc:
        raise UserError(str(exc)) from exc
    record = added.record
    print(f"core replica {record.name}: new certificate core:{record.name} serial "
          f"{record.serial:x}, valid until {record.not_after}")
    _list_files(added.folder)
    print(f"run it from {city.core_dir}: safetynet core --config "
          f"replicas/{record.name}/core.toml")
    if added.checkpoint_key_created:
        print(f"created the city's audit checkpoint key {city.checkpoint_key} (0600), which "
              "every replica reads: if a core already signed checkpoints with another key, "
              "put that key there instead before starting replicas")
    if args.storage_url is None:
        print("no --storage-url: set [storage] url in its core.toml, or it keeps an audit "
              "chain of its own")
    _broker_note(added.broker_updated)
    return EXIT_OK


def cmd_core_revoke(args: argparse.Namespace) -> int:
    """Revoke a replica's MQTT certificate and drop its ACL block."""
    from provisioning.core_replicas import revoke_replica
    from provisioning.exceptions import ProvisioningError

    city = _city(args)
    try:
        revoked = revoke_replica(city, args.name)
    except ProvisioningError as exc:
        raise UserError(str(exc)) from exc
    print(f"core replica {args.name}: certificate serial {revoked.record.serial:x} revoked; "
          f"its ACL block removed; CRL: {city.crl}")
    _broker_note(revoked.broker_updated)
    print("the broker reads the CRL and ACL at start and on SIGHUP: until reloaded it still "
          "admits the revoked certificate (NATS: run provision broker --engine nats again)")
    return EXIT_OK


def cmd_core_list(args: argparse.Namespace) -> int:
    """One line per MQTT identity of the core: client id, certificate serial and state."""
    from provisioning.certificate_authority import CORE_MQTT_IDENTITY, load_certificate

    city = _city(args)
    init_cert = city.core_dir / "tls" / "mqtt-client.crt"
    if init_cert.is_file():
        certificate = load_certificate(init_cert)
        print(f"{CORE_MQTT_IDENTITY:<20} serial {certificate.serial_number:x}  valid until "
              f"{certificate.not_valid_after_utc.isoformat(timespec='seconds')}  "
              f"(provision init: core/core.toml)")
    for record in city.replicas():
        state = (f"REVOKED {record.revoked_at}" if record.revoked
                 else f"valid until {record.not_after}")
        print(f"{record.name:<20} serial {record.serial:x}  {state}  "
              f"(core/replicas/{record.name}/core.toml)")
    return EXIT_OK


# --- provision broker ---------------------------------------------------------------------

def _register_broker(what: Subcommands) -> None:
    q = what.add_parser(
        "broker", help="write the city's Mosquitto config: TLS, certificates, ACL, CRL",
        description="Write a Mosquitto configuration for the city: one TLS listener (no plain "
                    "one), client certificates required and used as user names, an ACL that "
                    "confines each agent to its district's topics, and the CRL. District "
                    "add/revoke later rewrite the ACL and CRL in the same folder.")
    q.add_argument("--out", required=True, metavar="DIR", help="folder to write the files into")
    q.add_argument("--dir", metavar="CITY", help=DIR_HELP)
    q.add_argument("--port", type=int, default=8883, help="TLS listener port (default 8883)")
    q.add_argument("--bind", default="0.0.0.0", help="listener address (default 0.0.0.0)")
    q.add_argument("--install-dir", metavar="PATH",
                   help="where the files will live on the broker host (default: --out)")
    q.add_argument("--server-name", action="append", default=[], metavar="NAME",
                   help="extra DNS name or IP for the broker certificate (repeatable)")
    q.add_argument("--engine", choices=("mosquitto", "nats"), default="mosquitto",
                   help="mosquitto (one broker, the pilot's) or nats (a cluster that keeps "
                        "retained state and wills across a node loss: docs/scale-out.md)")
    q.add_argument("--nodes", type=int, default=3, help="NATS cluster size (default 3)")
    q.add_argument("--node-host", action="append", default=[], metavar="HOST",
                   help="a NATS node's name (repeatable; default nats-N.<broker host>)")
    q.set_defaults(func=cmd_provision_broker)


def cmd_provision_broker(args: argparse.Namespace) -> int:
    """Write the city's Mosquitto files into ``--out`` and list them."""
    from provisioning.broker_config import write_broker_files
    from provisioning.exceptions import ProvisioningError

    city = _city(args)
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be 1..65535, got {args.port}")
    if args.install_dir and not Path(args.install_dir).is_absolute():
        raise UserError(f"--install-dir must be an absolute path (Mosquitto reads the files "
                        f"from there), got {args.install_dir!r}")
    if args.engine == "nats":
        return _provision_nats(city, args)
    try:
        written = write_broker_files(
            city, Path(args.out), port=args.port, bind=args.bind,
            install_dir=Path(args.install_dir) if args.install_dir else None,
            extra_names=tuple(args.server_name))
    except ProvisioningError as exc:
        raise UserError(str(exc)) from exc
    print(f"mosquitto files for {written.districts} district(s) in {written.out_dir}")
    _list_files(written.out_dir)
    print(f"broker certificate names: {', '.join(written.names)}")
    print(f"use: mosquitto -c {written.config}   (or copy it into /etc/mosquitto/conf.d/)")
    print("or as a service that restarts on failure: copy safetynet-broker.service to "
          "/etc/systemd/system/, then systemctl enable --now safetynet-broker")
    settings = city.settings()
    if args.port != settings.broker_port:
        print(f"note: agents are configured for port {settings.broker_port} "
              f"({settings.broker_host}:{settings.broker_port}); the listener is on {args.port}")
    return EXIT_OK


def _provision_nats(city: Any, args: argparse.Namespace) -> int:
    """``provision broker --engine nats``: every node's config, TLS files and permissions."""
    from provisioning.exceptions import ProvisioningError
    from provisioning.nats_cluster import default_node_hosts, write_city_nats_cluster

    hosts = tuple(args.node_host) or default_node_hosts(city, args.nodes)
    try:
        written = write_city_nats_cluster(
            city, Path(args.out), hosts=hosts, mqtt_port=args.port,
            install_dir=Path(args.install_dir) if args.install_dir else None)
    except ProvisioningError as exc:
        raise UserError(str(exc)) from exc
    print(f"nats cluster files for {len(written.configs)} nodes, {written.districts} "
          f"district(s) and {written.replicas} core replica(s) in {written.out_dir}")
    _list_files(written.out_dir)
    print("use on node N: nats-server -c node-N.conf; bundles and core replica configs written "
          "from now on list every node in [broker] hosts (older bundles: district add --update)")
    print("after district or core add/revoke: run this again and reload every node (SIGHUP)")
    return EXIT_OK


# --- provision local-operator -------------------------------------------------------------

def _register_local_operator(what: Subcommands) -> None:
    q = what.add_parser(
        "local-operator", help="issue a district operator's local-mode credential",
        description="Issue a credential with which a district operator signs in to the agent's "
                    "local console while the core is unreachable (docs/local-mode.md). Only its "
                    "scrypt hash is written (0600) into the district's local-operators.toml, "
                    "which the next `provision district add` puts into the bundle; the "
                    "credential is printed once.")
    q.add_argument("--file", metavar="FILE",
                   help="write here instead of the city's districts/<id>/local-operators.toml")
    q.add_argument("--dir", metavar="CITY", help=DIR_HELP)
    q.add_argument("--district", required=True, help="the district the operator works for")
    q.add_argument("--operator", required=True, help="operator id")
    q.add_argument("--role", choices=["operator", "supervisor"], default="operator")
    q.add_argument("--replace", action="store_true", help="void and re-issue an existing one")
    q.set_defaults(func=cmd_provision_local_operator)


def cmd_provision_local_operator(args: argparse.Namespace) -> int:
    """Issue one local credential; print it (the only time it is shown)."""
    from provisioning.exceptions import ProvisioningError
    from provisioning.local_operators import LOCAL_OPERATORS, add_local_operator

    if args.file:
        path = Path(args.file)
    else:
        city = _city(args)
        if not city.district_dir(args.district).is_dir():
            raise UserError(f"district {args.district!r} is not enrolled in {city.root}: "
                            "`provision district add` it first, or give --file")
        path = city.district_dir(args.district) / LOCAL_OPERATORS
    try:
        credential = add_local_operator(path, args.district, args.operator, args.role,
                                        replace=args.replace)
    except ProvisioningError as exc:
        raise UserError(str(exc)) from exc
    print(credential)
    print(f"# shown once: hand it to {args.operator}; {path} keeps only its hash",
          file=sys.stderr)
    return EXIT_OK
