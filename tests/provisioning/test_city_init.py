"""`provision init`: a dedicated city CA, the core's certificates and keys; keys 0600, never printed."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from cloud_core.config import CoreConfig
from cloud_core.exceptions import ConfigError
from provisioning.certificate_authority import common_name, server_names
from safetynet.cli import main


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_makes_a_city_ca_core_certificates_and_private_keys(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "city"
    assert main(["provision", "init", "--dir", str(root), "--city-name", "Seoul",
                 "--server-name", "core.seoul.example", "--server-name", "10.1.2.3"]) == 0
    out, err = capsys.readouterr()

    keys = sorted(root.rglob("*.key"))
    assert {p.relative_to(root).as_posix() for p in keys} == {
        "ca/ca.key", "core/tls/server.key", "core/tls/mqtt-client.key", "core/grant-signing.key"}
    for key in keys:
        assert _mode(key) == 0o600, key
        body = key.read_text().splitlines()[1]
        assert body not in out and body not in err, f"{key} was printed"

    ca = x509.load_pem_x509_certificate((root / "ca/ca.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.issuer == ca.subject and "Seoul" in common_name(ca)

    server = x509.load_pem_x509_certificate((root / "core/tls/server.crt").read_bytes())
    server.verify_directly_issued_by(ca)
    assert {"localhost", "127.0.0.1", "core.seoul.example", "10.1.2.3"} <= set(server_names(server))
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage

    mqtt = x509.load_pem_x509_certificate((root / "core/tls/mqtt-client.crt").read_bytes())
    mqtt.verify_directly_issued_by(ca)
    assert common_name(mqtt) == "safetynet-core"

    config = CoreConfig.from_toml(root / "core/core.toml")
    assert config.tls_cert_file == root / "core/tls/server.crt"
    assert config.broker.cert_file == root / "core/tls/mqtt-client.crt"
    assert config.broker.port == 8883 and config.broker.host == "core.seoul.example"
    assert config.grant_key_path == root / "core/grant-signing.key"
    assert (root / "core/grant-signing.pub").read_text().startswith("-----BEGIN PUBLIC KEY")


def test_init_refuses_to_replace_an_existing_city(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "city"
    assert main(["provision", "init", "--dir", str(root)]) == 0
    ca_before = (root / "ca/ca.key").read_bytes()
    capsys.readouterr()
    assert main(["provision", "init", "--dir", str(root)]) == 2
    assert "refusing to replace its CA" in capsys.readouterr().err
    assert (root / "ca/ca.key").read_bytes() == ca_before


def test_core_tls_needs_both_certificate_and_key(tmp_path: Path) -> None:
    config = tmp_path / "core.toml"
    config.write_text('tls_cert_file = "server.crt"\n')
    with pytest.raises(ConfigError, match="tls_cert_file and tls_key_file go together"):
        CoreConfig.from_toml(config)
