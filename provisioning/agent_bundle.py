"""One district's agent bundle: everything its IT staff need, in one folder or one tar.gz.

    safetynet-agent-<district>/
      agent.toml               the agent's config (edge_agent/config.py); paths relative to it
      cameras.csv              the camera inventory (0600: stream URLs may carry credentials)
      grant-public.pem         the core's public grant key: the agent checks every session with it
      tls/ca.crt               the city CA: the only authority the agent trusts
      tls/agent.crt            the agent's certificate (CN agent:<district>)
      tls/agent.key            its private key (0600)
      safetynet-agent.service  a systemd unit (for the default paths; `agent install` writes its own)
      INSTALL.txt              the steps, in short
      local-operators.toml     optional: local-mode credentials, scrypt hashes only (0600;
                               docs/local-mode.md)
      MANIFEST.json            district, certificate, and each file's SHA-256 and mode

``install_bundle`` (``safetynet agent install``) checks every file against the manifest and puts
it in place with its mode: config under ``PREFIX/etc/safetynet``, state under
``PREFIX/var/lib/safetynet``, the unit under ``PREFIX/etc/systemd/system``.
"""

from __future__ import annotations

import grp
import hashlib
import io
import json
import os
import pwd
import shutil
import sys
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from provisioning.atomic_write import write_private, write_public
from provisioning.exceptions import BundleError
from provisioning.service_units import (
    AGENT_UNIT,
    DEFAULT_USER,
    agent_unit_text,
)

FORMAT = 1
MANIFEST = "MANIFEST.json"
UNIT_NAME = AGENT_UNIT
MAX_BUNDLE_BYTES = 256 * 1024 * 1024

#: Every file of a bundle and its mode; nothing else is read from a bundle or installed.
FILE_MODES: Mapping[str, int] = {
    "agent.toml": 0o640,
    "cameras.csv": 0o600,
    "grant-public.pem": 0o644,
    "tls/ca.crt": 0o644,
    "tls/agent.crt": 0o644,
    "tls/agent.key": 0o600,
    UNIT_NAME: 0o644,
    "INSTALL.txt": 0o644,
}
#: Files a bundle may hold besides those: each is checked against the manifest when present.
OPTIONAL_FILE_MODES: Mapping[str, int] = {"local-operators.toml": 0o600}
ALL_FILE_MODES: Mapping[str, int] = {**FILE_MODES, **OPTIONAL_FILE_MODES}
SECRET_FILES = frozenset(name for name, mode in ALL_FILE_MODES.items() if mode == 0o600)


def bundle_name(district_id: str) -> str:
    return f"safetynet-agent-{district_id}"


def _toml(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


#: ``[local]`` for a bundle that carries local-mode credentials (docs/local-mode.md).
LOCAL_SECTION = (
    "[local]                       # serve the district's own operators while the core is down",
    'listen = "127.0.0.1:8443"     # set to the control centre\'s LAN address (behind its TLS)',
    'credentials_file = "local-operators.toml"',
    'journal_file = "/var/lib/safetynet/local-journal.sqlite3"',
    "",
)


def agent_config_text(district_id: str, district_name: str, *, city_name: str, broker_host: str,
                      broker_port: int, core_address: str,
                      advertise: Sequence[str] = (), local_mode: bool = False,
                      broker_nodes: Sequence[str] = ()) -> str:
    """The agent's TOML: TLS to the broker (``broker_nodes``: every node of a clustered one)
    and the core with the bundle's files, CSV cameras."""
    advertise_line = (f"advertise = [{', '.join(_toml(a) for a in advertise)}]" if advertise else
                      "# advertise = [\"10.20.0.5\"]   # ICE host addresses; unset = every interface")
    return "\n".join([
        f"# Edge agent of district {district_id} ({district_name}), city {city_name}.",
        "# Written by `safetynet provision district add`; paths are relative to this file.",
        'cameras_file = "cameras.csv"',
        "",
        "[district]",
        f"id = {_toml(district_id)}",
        f"name = {_toml(district_name)}",
        "",
        "[agent]",
        f"id = {_toml(district_id + '-agent')}",
        "",
        "[broker]                      # MQTT over TLS; the broker must show a city certificate",
        f"host = {_toml(broker_host)}",
        f"port = {broker_port}",
        *broker_hosts_lines(broker_nodes),
        'ca_file = "tls/ca.crt"',
        'cert_file = "tls/agent.crt"',
        'key_file = "tls/agent.key"',
        "",
        "[core]                        # checked by `safetynet agent check` (gRPC health over TLS)",
        f"address = {_toml(core_address)}",
        'ca_file = "tls/ca.crt"',
        "",
        "[grants]",
        'public_key = "grant-public.pem"',
        "",
        "[webrtc]",
        advertise_line,
        "",
        *(LOCAL_SECTION if local_mode else ()),
    ])


def broker_hosts_lines(broker_nodes: Sequence[str]) -> list[str]:
    """``hosts = [...]`` for a clustered broker's nodes (tried in turn, failed over), or none."""
    if not broker_nodes:
        return []
    return [f"hosts = [{', '.join(_toml(node) for node in broker_nodes)}]"
            "   # the cluster's nodes: tried in turn"]


def systemd_unit_text(district_id: str, *, config: Path, state_dir: Path, executable: str,
                      user: str = DEFAULT_USER) -> str:
    """The agent's unit (``provisioning.service_units``: restarts on failure)."""
    return agent_unit_text(district_id, config=config, state_dir=state_dir,
                           executable=executable, user=user)


def install_text(district_id: str) -> str:
    return "\n".join([
        f"Safety Net agent bundle for district {district_id}.",
        "",
        "  sudo safetynet agent install THIS_BUNDLE        # files to /etc/safetynet, unit to systemd",
        "  sudo -u safetynet safetynet agent check --config /etc/safetynet/agent.toml",
        "  sudo systemctl daemon-reload && sudo systemctl enable --now safetynet-agent",
        "",
        "Full steps: docs/district-install.md. tls/agent.key is this district's identity: keep it",
        "secret (mode 0600), never copy it elsewhere; ask the city for a new bundle if it leaks.",
        "",
    ])


@dataclass(frozen=True)
class BuiltBundle:
    folder: Path
    tarball: Path


def write_bundle(out_dir: Path, district_id: str, files: Mapping[str, bytes],
                 manifest: dict[str, Any]) -> BuiltBundle:
    """Write ``files`` as ``out_dir/<name>/`` and ``out_dir/<name>.tar.gz``, each with MANIFEST.json."""
    if not set(FILE_MODES) <= set(files) <= set(ALL_FILE_MODES):
        raise BundleError(str(out_dir), f"a bundle holds exactly {sorted(FILE_MODES)} (and "
                                        f"optionally {sorted(OPTIONAL_FILE_MODES)}), "
                                        f"not {sorted(files)}")
    name = bundle_name(district_id)
    manifest = {**manifest, "format": FORMAT, "district": district_id, "files": {
        path: {"sha256": hashlib.sha256(data).hexdigest(), "mode": f"{ALL_FILE_MODES[path]:04o}"}
        for path, data in sorted(files.items())}}
    manifest_bytes = (json.dumps(manifest, indent=2) + "\n").encode()

    folder = out_dir / name
    staging = out_dir / f".{name}.new"
    shutil.rmtree(staging, ignore_errors=True)
    for path, data in files.items():
        if path in SECRET_FILES:
            write_private(staging / path, data)
        else:
            write_public(staging / path, data, ALL_FILE_MODES[path])
    write_public(staging / MANIFEST, manifest_bytes)
    os.chmod(staging, 0o700)  # the folder holds a private key
    old = out_dir / f".{name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    staging.rename(folder)
    shutil.rmtree(old, ignore_errors=True)

    tarball = out_dir / f"{name}.tar.gz"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, data in [*sorted(files.items()), (MANIFEST, manifest_bytes)]:
            info = tarfile.TarInfo(f"{name}/{path}")
            info.size, info.mode, info.mtime = len(data), ALL_FILE_MODES.get(path, 0o644), 0
            tar.addfile(info, io.BytesIO(data))
    write_private(tarball, buffer.getvalue())  # it holds the key: 0600 like the key itself
    return BuiltBundle(folder, tarball)


@dataclass(frozen=True)
class Bundle:
    """A bundle read into memory, every file checked against its manifest."""

    source: Path
    district_id: str
    manifest: dict[str, Any]
    files: dict[str, bytes]


def read_bundle(path: Path) -> Bundle:
    """Read a bundle folder or tar.gz; BundleError if anything is missing, altered or unsafe."""
    if path.is_dir():
        raw = {p: (path / p).read_bytes() for p in (*ALL_FILE_MODES, MANIFEST)
               if (path / p).is_file()}
    elif path.is_file():
        raw = _read_tarball(path)
    else:
        raise BundleError(str(path), "no such bundle (a folder or a .tar.gz from the city)")
    if MANIFEST not in raw:
        raise BundleError(str(path), f"no {MANIFEST}: not a Safety Net agent bundle")
    try:
        manifest = json.loads(raw.pop(MANIFEST))
        district_id = str(manifest["district"])
        listed = manifest["files"]
        if manifest.get("format") != FORMAT:
            raise BundleError(str(path), f"bundle format {manifest.get('format')!r}, "
                                         f"this safetynet reads format {FORMAT}")
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(str(path), f"unreadable {MANIFEST}: {exc}") from exc
    optional = [n for n in OPTIONAL_FILE_MODES if n in raw or n in listed]
    for name in (*FILE_MODES, *optional):
        if name not in raw:
            raise BundleError(str(path), f"{name} is missing from the bundle")
        expected = listed.get(name, {}).get("sha256")
        if hashlib.sha256(raw[name]).hexdigest() != expected:
            raise BundleError(str(path), f"{name} does not match the manifest: the bundle was "
                                         "altered or damaged; ask the city for a fresh one")
    return Bundle(path, district_id, manifest, raw)


def _read_tarball(path: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    wanted = {*ALL_FILE_MODES, MANIFEST}
    total = 0
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar.getmembers():
                parts = PurePosixPath(member.name).parts
                if len(parts) < 2 or ".." in parts or member.name.startswith("/"):
                    raise BundleError(str(path), f"unexpected entry {member.name!r} in the archive")
                relative = "/".join(parts[1:])
                if relative not in wanted or not member.isfile():
                    continue  # only the files the format names are ever read
                total += member.size
                if total > MAX_BUNDLE_BYTES:
                    raise BundleError(str(path), "the archive is too large to be a bundle")
                extracted = tar.extractfile(member)
                assert extracted is not None
                files[relative] = extracted.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(str(path), f"not a readable tar.gz: {exc}") from exc
    return files


@dataclass(frozen=True)
class Installed:
    district_id: str
    config: Path
    config_dir: Path
    state_dir: Path
    unit: Path
    user: str
    owned: bool  # files were given to ``user`` (running as root with that user present)


def default_executable() -> str:
    beside = Path(sys.executable).with_name("safetynet")
    return str(beside) if beside.is_file() else f"{sys.executable} -m safetynet"


def install_bundle(bundle: Bundle, prefix: Path, *, user: str = DEFAULT_USER,
                   executable: str | None = None, force: bool = False) -> Installed:
    """Put a bundle's files in place under ``prefix`` with their modes; write the systemd unit."""
    config_dir = prefix / "etc" / "safetynet"
    state_dir = prefix / "var" / "lib" / "safetynet"
    unit = prefix / "etc" / "systemd" / "system" / UNIT_NAME
    previous = config_dir / MANIFEST
    if previous.is_file() and not force:
        try:
            installed_district = json.loads(previous.read_text()).get("district")
        except ValueError:
            installed_district = None
        if installed_district not in (None, bundle.district_id):
            raise BundleError(str(config_dir), f"holds the agent of district {installed_district}, "
                                               f"not {bundle.district_id}; pass --force to replace it")
    owner = _owner(user)
    for folder in (config_dir, config_dir / "tls", state_dir):
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o750)
    for name, data in bundle.files.items():
        if name == UNIT_NAME:
            continue
        target = config_dir / name
        if name in SECRET_FILES:
            write_private(target, data)
        else:
            write_public(target, data, ALL_FILE_MODES[name])
    write_public(previous, json.dumps(bundle.manifest, indent=2) + "\n")
    config = config_dir / "agent.toml"
    write_public(unit, systemd_unit_text(bundle.district_id, config=config, state_dir=state_dir,
                                         executable=executable or default_executable(), user=user))
    if owner is not None:
        uid, gid = owner
        for folder in (config_dir, config_dir / "tls"):
            os.chown(folder, 0, gid)
        os.chown(state_dir, uid, gid)
        for name in bundle.files:
            if name != UNIT_NAME:
                os.chown(config_dir / name, uid if name in SECRET_FILES else 0, gid)
    return Installed(bundle.district_id, config, config_dir, state_dir, unit, user,
                     owned=owner is not None)


def _owner(user: str) -> tuple[int, int] | None:
    """(uid, gid) of ``user`` when we can and should chown to it (running as root), else None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    try:
        gid = grp.getgrnam(user).gr_gid
    except KeyError:
        gid = entry.pw_gid
    return entry.pw_uid, gid
