"""The generated Mosquitto config, run by a real Mosquitto: each district reads and writes only
its own topics; only current certificates of the city CA get in; agents trust only the city CA."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest

from edge_agent.preflight import Outcome, check_broker, mqtt_connect_packet
from protos import topics
from provisioning.broker_config import CONFIG_NAME
from provisioning.certificate_authority import certificate_pem, new_private_key, private_key_pem
from runtime.mqtt_link import BrokerSettings, MqttLink
from safetynet.broker import MosquittoBroker
from safetynet.cli import main
from tests.provisioning.conftest import ProvisionedCity, provision


async def _until(client: aiomqtt.Client, match: Callable[[aiomqtt.Message], bool],
                 timeout: float = 5.0) -> list[aiomqtt.Message]:
    """Messages as they arrive, up to and including the first that ``match``es."""
    seen: list[aiomqtt.Message] = []
    async with asyncio.timeout(timeout):
        async for message in client.messages:
            seen.append(message)
            if match(message):
                return seen
    raise AssertionError("unreachable")


def _payload(value: bytes) -> Callable[[aiomqtt.Message], bool]:
    return lambda message: message.payload == value


def _agent_settings(provisioned: ProvisionedCity, cert: Path, key: Path,
                    ca: Path | None = None, port: int | None = None) -> BrokerSettings:
    return BrokerSettings(host="127.0.0.1", port=port or provisioned.broker_port,
                          ca_file=ca or provisioned.city.ca_cert, cert_file=cert, key_file=key)


@pytest.mark.parametrize(("me", "other"), [("alpha", "bravo"), ("bravo", "alpha")])
async def test_a_district_reads_and_writes_only_its_own_topics(
        provisioned: ProvisionedCity, city_broker: MosquittoBroker, me: str, other: str) -> None:
    async with provisioned.client("core") as core, provisioned.client(me) as mine, \
            provisioned.client(other) as theirs:
        for subscription in topics.CORE_SUBSCRIPTIONS:
            await core.subscribe(subscription, qos=1)
        await theirs.subscribe(topics.signal_request(other), qos=1)
        # `me` listens to its own signalling, and tries the other district's and everything.
        for subscription in (topics.signal_request(me), topics.signal_request(other),
                             topics.signal_response(other), "safetynet/v1/#"):
            await mine.subscribe(subscription, qos=1)

        # `me` forges every kind of message of the other district, then reports its own status.
        forged = (topics.agent_status(other), topics.camera_status(other, f"{other}-001"),
                  topics.heartbeat(other), topics.signal_response(other),
                  topics.session_events(other), topics.signal_request(other))
        for topic in forged:
            await mine.publish(topic, b"forged", qos=1)
        await mine.publish(topics.agent_status(me), b"own status", qos=1)
        # Same connection, in order: anything forged that got through would arrive first.
        received = await _until(core, _payload(b"own status"))
        assert [(str(m.topic), m.payload) for m in received] == [
            (topics.agent_status(me), b"own status")]

        # The core signals the other district, then `me`: each gets its own, only.
        await core.publish(topics.signal_request(other), b"offer for other", qos=1)
        await core.publish(topics.signal_request(me), b"offer for me", qos=1)
        received = await _until(theirs, _payload(b"offer for other"))  # positive control
        assert [(str(m.topic), m.payload) for m in received] == [
            (topics.signal_request(other), b"offer for other")]
        received = await _until(mine, _payload(b"offer for me"))
        assert {(str(m.topic), m.payload) for m in received} == {
            (topics.signal_request(me), b"offer for me")}


async def test_foreign_expired_and_missing_certificates_cannot_connect(
        provisioned: ProvisionedCity, city_broker: MosquittoBroker, tmp_path: Path) -> None:
    # Control: a current certificate of the city gets in.
    valid = _agent_settings(provisioned, *provisioned.district_files("alpha"))
    assert (await check_broker(valid, "alpha-agent")).outcome is Outcome.PASS

    # Same identity (agent:alpha), issued by another city's CA.
    other_city = provision(tmp_path / "other", districts=("alpha",))
    foreign = _agent_settings(provisioned, *other_city.district_files("alpha"))
    # A certificate of the city CA that expired yesterday.
    key = new_private_key()
    now = datetime.now(UTC)
    expired_cert = provisioned.city.authority().issue_client(
        key.public_key(), "agent:alpha", unit="district alpha",
        not_before=now - timedelta(days=30), not_after=now - timedelta(days=1))
    (tmp_path / "expired.crt").write_bytes(certificate_pem(expired_cert))
    (tmp_path / "expired.key").write_bytes(private_key_pem(key))
    expired = _agent_settings(provisioned, tmp_path / "expired.crt", tmp_path / "expired.key")
    # No client certificate at all.
    anonymous = BrokerSettings(host="127.0.0.1", port=provisioned.broker_port,
                               ca_file=provisioned.city.ca_cert)

    for settings, why in ((foreign, "not issued by the CA it trusts"), (expired, "expired"),
                          (anonymous, "missing")):
        result = await check_broker(settings, "alpha-agent")
        assert result.outcome is Outcome.FAIL
        assert result.detail == f"the broker rejected the agent certificate: {why}"
    # And no plain MQTT: a CONNECT in the clear gets the connection closed, no CONNACK.
    reader, writer = await asyncio.open_connection("127.0.0.1", provisioned.broker_port)
    writer.write(mqtt_connect_packet("plain"))
    with pytest.raises((asyncio.IncompleteReadError, ConnectionResetError)):
        async with asyncio.timeout(5):
            await reader.readexactly(4)
    writer.close()


async def test_a_revoked_district_is_out_after_a_reload(
        provisioned: ProvisionedCity, city_broker: MosquittoBroker,
        capsys: pytest.CaptureFixture[str]) -> None:
    bravo = _agent_settings(provisioned, *provisioned.district_files("bravo"))
    assert main(["provision", "district", "revoke", "bravo",
                 "--dir", str(provisioned.city.root)]) == 0
    assert "reload mosquitto" in capsys.readouterr().out
    assert "agent:bravo" not in (provisioned.broker_dir / "acl").read_text()
    # Mosquitto keeps the CRL and ACL it read at start until it is told to reload.
    assert (await check_broker(bravo, "bravo-agent")).outcome is Outcome.PASS

    async with provisioned.client("core") as core, provisioned.client("bravo") as open_before:
        await core.subscribe(topics.agent_status("+"), qos=1)
        await _reload(city_broker)
        result = await check_broker(bravo, "bravo-agent")
        assert result.detail == "the broker rejected the agent certificate: revoked"

        # The connection bravo opened before stays up but may no longer publish anything.
        await open_before.publish(topics.agent_status("bravo"), b"still here?", qos=1)
        async with provisioned.client("alpha") as alpha:
            await alpha.publish(topics.agent_status("alpha"), b"control", qos=1)
        received = await _until(core, _payload(b"control"))
        assert [m.payload for m in received] == [b"control"]


async def _reload(broker: MosquittoBroker) -> None:
    """SIGHUP, as `systemctl reload mosquitto` sends, and wait until Mosquitto says it reloads.

    Mosquitto is single-threaded: once it logs "Reloading config." it finishes reloading before
    it looks at another connection. Its log is the only signal, so poll it (bounded).
    """
    assert broker.pid is not None
    assert not any("Reloading config" in line for line in broker.log_lines)
    os.kill(broker.pid, signal.SIGHUP)
    async with asyncio.timeout(5):
        while not any("Reloading config" in line for line in broker.log_lines):
            await asyncio.sleep(0.02)


# paho-mqtt 2.2 leaves the socket of a failed TLS handshake for the garbage collector.
@pytest.mark.filterwarnings("ignore:Exception ignored in. <ssl.SSLSocket"
                            ":pytest.PytestUnraisableExceptionWarning")
async def test_agents_refuse_a_broker_not_signed_by_the_city_ca(
        provisioned: ProvisionedCity, work_dir: Path) -> None:
    impostor_city = provision(work_dir / "impostor", districts=())
    config = (impostor_city.broker_dir / CONFIG_NAME).read_text()
    (work_dir / "impostor-run").mkdir()
    settings = _agent_settings(provisioned, *provisioned.district_files("alpha"),
                               port=impostor_city.broker_port)
    context = settings.tls_context()
    assert context is not None and len(context.get_ca_certs()) == 1  # the city CA, no system store
    async with MosquittoBroker(port=impostor_city.broker_port, config=config,
                               work_dir=work_dir / "impostor-run"):
        result = await check_broker(settings, "alpha-agent")
        assert result.outcome is Outcome.FAIL
        assert result.detail.startswith("broker certificate not signed by the city CA")
        assert "wrong ca_file?" in result.hint
        async with MqttLink(settings, client_id="alpha-agent", on_message=_ignore,
                            backoff_initial=0.1) as link:
            with pytest.raises(TimeoutError):
                await link.wait_connected(1.0)


async def _ignore(message: aiomqtt.Message) -> None:
    raise AssertionError(f"no message expected, got {message.topic}")
