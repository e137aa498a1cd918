"""Which relay serves which camera is the registry's, not one replica's: a relay one core replica
started is the one every replica routes the camera's next incident views to (and counts when it
picks the least busy relay), until its upstream session ends or the relay goes offline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_core.grants import GrantSigner
from cloud_core.incidents import IncidentStore
from cloud_core.registry import Registry
from cloud_core.relays import ActiveRelay, RelayDesk
from cloud_core.sessions import SessionBroker
from cloud_core.signalling import MqttSignalling
from cloud_core.storage.database import Database
from runtime.grant import RELAY_AGENCY, relay_operator


def _desk(registry: Registry) -> RelayDesk:
    signalling = MqttSignalling()

    async def record(entry: object) -> None:
        return None

    return RelayDesk(keys={}, signalling=signalling, sessions=SessionBroker(registry, signalling),
                     signer=GrantSigner(Ed25519PrivateKey.generate()), registry=registry,
                     incidents=IncidentStore(registry.db), record=record, timeout=1.0)


def test_a_relay_started_on_one_replica_is_the_cameras_relay_on_every_replica(
        two_replicas: tuple[Database, Database]) -> None:
    registry_a, registry_b = (Registry(db) for db in two_replicas)
    desk_a, desk_b = _desk(registry_a), _desk(registry_b)
    now = datetime.now(UTC)
    for desk in (desk_a, desk_b):  # both replicas received the relays' retained statuses
        desk.online.update({"relay-1": now, "relay-2": now})
    # Replica A's relay start leaves the upstream session's row, as SessionBroker.open does.
    registry_a.record_session("ses-up-1", "gangnam-001", "gangnam", now, now + timedelta(hours=1),
                              operator_id=relay_operator("relay-1"), agency=RELAY_AGENCY,
                              incident_id="INC-1", basis="relay")
    registry_a.record_session("ses-viewer", "gangnam-002", "gangnam", now, now + timedelta(hours=1),
                              operator_id="kim", agency="police-112", incident_id="INC-1",
                              basis="incident")
    expected = ActiveRelay("relay-1", "gangnam-001", "gangnam", "INC-1", "ses-up-1")
    assert desk_b.active == {"gangnam-001": expected} == desk_a.active

    desk_b.online.pop("relay-1")  # relay-1 went offline, as B heard it: no longer relaying
    assert desk_b.active == {}
    assert desk_a.active == {"gangnam-001": expected}

    registry_b.end_session("ses-up-1", now, "incident closed")  # the upstream ended anywhere
    assert desk_a.active == {}
