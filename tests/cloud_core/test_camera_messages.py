"""ListCameras' page builder (straight from rows) says what the record-based one says."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloud_core.registry import CameraUpdate, Registry
from cloud_core.servicer import EncodedCameras, _row_message, camera_message
from protos.safetynet.v1 import core_pb2


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


def test_encoded_pages_follow_every_change_of_a_row(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r.sqlite3")
    seen = datetime(2026, 12, 1, 3, 4, 5, tzinfo=UTC)
    registry.set_agent("gangnam", "Gangnam", "a", True, "1", seen)

    def camera(status: str, viewers: int) -> CameraUpdate:
        return CameraUpdate("gangnam-001", "gangnam", "Station", 37.5, 127.03, "rtsp", status,
                            "", "", viewers, seen)

    def expected(reachable: bool) -> core_pb2.ListCamerasResponse:
        return core_pb2.ListCamerasResponse(
            cameras=[_row_message(row, reachable) for row in registry.page_rows()],
            next_page_token="t")

    encoded = EncodedCameras()
    registry.upsert_cameras([camera("online", 0)])
    assert encoded.page(registry.page_rows(), True, "t") == expected(True)
    registry.upsert_cameras([camera("online", 3)])  # only a viewer count changed
    assert encoded.page(registry.page_rows(), True, "t") == expected(True)
    assert encoded.page(registry.page_rows(), True, "t").cameras[0].viewers == 3
    registry.upsert_cameras([camera("offline", 3)])
    assert encoded.page(registry.page_rows(), True, "t") == expected(True)
    lost = encoded.page(registry.page_rows(), False, "t")  # the broker is gone: unknown
    assert lost == expected(False) and lost != expected(True)
    small = EncodedCameras(limit=1)  # past its bound it starts over, still right
    registry.upsert_cameras([CameraUpdate("gangnam-002", "gangnam", "Exit", 37.51, 127.04, "rtsp",
                                          "online", "", "", 0, seen)])
    for _ in range(2):
        assert small.page(registry.page_rows(), True, "t") == expected(True)
    registry.close()
