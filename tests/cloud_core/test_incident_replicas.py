"""Incidents shared by core replicas: two stores on one database (each its own connection or
pool, as two ``safetynet core`` processes have) see each other's writes at once, and positions
added to one incident at the same moment never take the same place in its trail."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from cloud_core.incidents import IncidentStore
from cloud_core.policy import Policy, TrailPoint
from cloud_core.storage.database import Database, open_database

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
GANGNAM = (37.4979, 127.0276)
POSITIONS_EACH = 40


def test_an_incident_opened_on_one_replica_is_seen_and_closed_on_the_other(
    pg_dsn: str,
) -> None:
    a_db, b_db = open_database(pg_dsn), open_database(pg_dsn)
    try:
        a, b = IncidentStore(a_db), IncidentStore(b_db)
        incident = Policy.default().open_incident("robbery", *GANGNAM, None, T0, T0, "112-1",
                                                  incident_id="INC-1")
        a.add(incident, "police-op")
        a.trail.claim_ref("police-112", "112-1", "INC-1")
        seen = b.get("INC-1")
        assert seen is not None and seen.incident.closed_at is None
        assert [s.incident.incident_id for s in b.list_all(now=T0)] == ["INC-1"]
        assert b.trail.incident_for_ref("police-112", "112-1") == "INC-1"
        assert b.trail.claim_ref("police-112", "112-1", "INC-2") == "INC-1"
        assert b.close("INC-1", T0 + timedelta(minutes=3), "arrested")
        assert not a.close("INC-1", T0 + timedelta(minutes=4), "twice")
        closed = a.get("INC-1")
        assert closed is not None and closed.close_reason == "arrested"
        assert a.list_all(now=T0) == []
    finally:
        a_db.close()
        b_db.close()


@pytest.mark.parametrize("with_row", [True, False], ids=["incident", "bare-trail"])
def test_two_replicas_adding_positions_at_once_never_collide(
    two_replicas: tuple[Database, Database], with_row: bool,
) -> None:
    stores = [IncidentStore(db) for db in two_replicas]
    if with_row:
        stores[0].add(Policy.default().open_incident("robbery", *GANGNAM, None, T0, T0, "",
                                                     incident_id="INC-1"), "police-op")
    start = threading.Barrier(len(stores))
    failures: list[BaseException] = []

    def add(store: IncidentStore, lane: int) -> None:
        start.wait()
        try:
            for n in range(POSITIONS_EACH):
                at = T0 + timedelta(seconds=n + 1)
                store.trail.add_position("INC-1", TrailPoint(37.4979 + lane / 10_000, 127.0276,
                                                             at, "cad"))
        except BaseException as exc:  # the main thread reports it
            failures.append(exc)

    threads = [threading.Thread(target=add, args=(store, lane))
               for lane, store in enumerate(stores, start=1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    first = 1 if with_row else 0
    rows = two_replicas[1].execute(
        "SELECT seq, lat FROM incident_positions WHERE incident_id=? ORDER BY seq",
        ["INC-1"]).fetchall()
    assert [seq for seq, _ in rows] == list(range(1, first + 2 * POSITIONS_EACH + 1))
    lanes = [round((lat - 37.4979) * 10_000) for _, lat in rows[first:]]
    assert lanes.count(1) == lanes.count(2) == POSITIONS_EACH
