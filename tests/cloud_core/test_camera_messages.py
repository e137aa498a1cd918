"""ListCameras' page builder (straight from rows) says what the record-based one says."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloud_core.registry import CameraUpdate, Registry
from cloud_core.servicer import _row_message, camera_message


@pytest.mark.parametrize(("agent_online", "reachable"), [(True, True), (False, True), (True, False)])
def test_a_row_message_is_the_record_message(tmp_path: Path, agent_online: bool,
                                             reachable: bool) -> None:
    registry = Registry(tmp_path / "r.sqlite3")
    seen = datetime(2026, 12, 1, 3, 4, 5, 678901, tzinfo=UTC)
    registry.set_agent("gangnam", "Gangnam", "a", agent_online, "1", seen)
    registry.upsert_cameras([
        CameraUpdate("gangnam-001", "gangnam", "Station", 37.5, 127.03, "rtsp", "online", "",
                     "", 2, seen),
        CameraUpdate("gangnam-002", "gangnam", "Exit 4", 37.51, 127.04, "rtsp", "offline",
                     "stalled", "no packets for 5 s", 0, seen)])
    registry.broker_reachable = reachable
    rows = registry.page_rows(limit=10)
    records = registry.list_cameras()
    assert [r[0] for r in rows] == [c.camera_id for c in records] == ["gangnam-001", "gangnam-002"]
    for row, record in zip(rows, records, strict=True):
        assert _row_message(row, reachable) == camera_message(record)
    assert _row_message(rows[0], reachable).last_seen.ToDatetime(tzinfo=UTC) == seen
    registry.close()
