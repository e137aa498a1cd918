"""Where a district keeps its evidence clips: one folder per clip on the agent's own disk.

    <directory>/<clip_id>/segment-00000.mp4 …   the camera's H.264, remuxed (evidence_recorder)
    <directory>/<clip_id>/manifest.json          signed by the agent's key (runtime.evidence_manifest)
    <directory>/<clip_id>/state.json             this store's bookkeeping: state, expiry, hold

Folders are 0700, files 0600. The disk budget is a hard ceiling: when it is spent, new clips
are refused (and a running clip is sealed) rather than anything held being deleted. A clip is
purged only after its retention ends and no legal hold covers it; a purged clip keeps its
``state.json`` as a tombstone so the purge can be reported to the core's audit chain.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.evidence_recorder import SegmentInfo
from edge_agent.evidence_settings import GIB, EvidenceSettings
from edge_agent.exceptions import EvidenceRefused
from protos.safetynet.v1 import mqtt_pb2
from protos.topics import check_id
from runtime.evidence_manifest import MANIFEST_FILE, file_sha256, raw_public_key, sign_manifest
from runtime.grant import key_id_for

log = structlog.get_logger(__name__)

STATE_FILE = "state.json"


@dataclass
class ClipRecord:
    clip_id: str
    camera_id: str
    incident_id: str
    operator_id: str
    agency: str
    started_at: str
    expires_at: str
    state: str = "recording"          # recording → sealed → purged
    ended_at: str = ""
    end_reason: str = ""
    hold_until: str = ""
    segments: list[dict[str, Any]] = field(default_factory=list)
    manifest_sha256: str = ""
    manifest_bytes: int = 0
    unreported: list[str] = field(default_factory=list)  # events the core has not had yet
    truncated_by_crash: bool = False  # sealed at restart: the agent died while recording

    def retained_until(self) -> datetime:
        ends = [datetime.fromisoformat(self.expires_at)]
        if self.hold_until:
            ends.append(datetime.fromisoformat(self.hold_until))
        return max(ends)


class EvidenceStore:
    def __init__(self, settings: EvidenceSettings, *, district_id: str, agent_id: str,
                 key: Ed25519PrivateKey) -> None:
        self.settings = settings
        self.district_id = district_id
        self.agent_id = agent_id
        self.key = key
        self.key_id = key_id_for(key.public_key())
        self.public_key = raw_public_key(key.public_key())
        self.clips: dict[str, ClipRecord] = {}
        settings.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(settings.directory, 0o700)
        for state in sorted(settings.directory.glob(f"*/{STATE_FILE}")):
            try:
                record = ClipRecord(**json.loads(state.read_text(encoding="utf-8")))
            except (ValueError, TypeError) as exc:
                log.error("evidence clip state unreadable, left as is", path=str(state),
                          error=str(exc))
                continue
            self.clips[record.clip_id] = record

    def folder(self, clip_id: str) -> Path:
        return self.settings.directory / clip_id

    def used_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.settings.directory.glob("*/*") if p.is_file())

    def has_room(self, extra: int = 0) -> bool:
        return self.used_bytes() + extra < self.settings.disk_budget_bytes

    def create(self, *, clip_id: str, camera_id: str, incident_id: str, operator_id: str,
               agency: str, retention_days: float, now: datetime) -> ClipRecord:
        try:
            check_id(clip_id, "clip id")
        except ValueError as exc:
            raise EvidenceRefused(mqtt_pb2.EVIDENCE_ERROR_BAD_REQUEST, str(exc)) from exc
        if clip_id in self.clips:
            raise EvidenceRefused(
                mqtt_pb2.EVIDENCE_ERROR_BAD_REQUEST,
                f"clip {clip_id!r} already exists")
        if not self.has_room():
            raise EvidenceRefused(
                mqtt_pb2.EVIDENCE_ERROR_DISK_BUDGET,
                f"the agent's evidence disk budget "
                f"({self.settings.disk_budget_bytes / GIB:g} GiB) is spent; no clip is deleted "
                "to make room — purge expired clips or raise evidence.disk_budget_gib")
        self.folder(clip_id).mkdir(mode=0o700)
        record = ClipRecord(
            clip_id=clip_id, camera_id=camera_id, incident_id=incident_id, operator_id=operator_id,
            agency=agency, started_at=now.isoformat(),
            expires_at=(now + timedelta(days=retention_days or self.settings.retention_days))
            .isoformat())
        self.clips[clip_id] = record
        self.save(record)
        return record

    def save(self, record: ClipRecord) -> None:
        folder = self.folder(record.clip_id)
        temporary = folder / f".{STATE_FILE}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(asdict(record), file, indent=1)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, folder / STATE_FILE)

    def recover_after_crash(self, now: datetime) -> list[ClipRecord]:
        """Seal every clip a crash left ``recording``: with the segments that made it to disk.

        A segment is on disk when its MP4 is complete (the muxer writes the index at close), so
        PyAV opens it; the one being written when the agent died has no index and cannot be
        played. It is kept beside the clip as ``<segment>.partial``, hashed and named in the
        manifest (nothing on disk goes unaccounted), but is not one of the clip's segments.
        """
        recovered = []
        for record in self.clips.values():
            if record.state != "recording":
                continue
            folder = self.folder(record.clip_id)
            segments: list[SegmentInfo] = []
            partial: list[dict[str, Any]] = []
            for path in sorted(folder.glob("segment-*.mp4")):
                info = _complete_segment(path)
                if info is not None:
                    segments.append(info)
                    continue
                kept = path.with_name(path.name + ".partial")
                os.replace(path, kept)
                os.chmod(kept, 0o600)
                partial.append({"file": kept.name, "sha256": file_sha256(kept),
                                "bytes": kept.stat().st_size})
            record.truncated_by_crash = True
            self.seal(record, segments, "truncated: the agent stopped while recording (crash); "
                      f"sealed at its restart with {len(segments)} complete segment(s)", now,
                      partial=partial)
            log.warning("evidence clip sealed after a crash", clip=record.clip_id,
                        segments=len(segments), partial=len(partial))
            recovered.append(record)
        return recovered

    def seal(self, record: ClipRecord, segments: list[SegmentInfo], reason: str,
             now: datetime, *, partial: list[dict[str, Any]] | None = None) -> ClipRecord:
        """Sign the manifest over the recorded segments; the clip is then immutable."""
        for segment in segments:
            os.chmod(self.folder(record.clip_id) / segment.file, 0o600)
        record.segments = [{"file": s.file, "sha256": s.sha256, "bytes": s.bytes,
                            "frames": s.frames} for s in segments]
        record.ended_at, record.end_reason, record.state = now.isoformat(), reason, "sealed"
        body = {"clip_id": record.clip_id, "district_id": self.district_id,
                "agent_id": self.agent_id, "camera_id": record.camera_id,
                "incident_id": record.incident_id, "operator_id": record.operator_id,
                "agency": record.agency, "started_at": record.started_at,
                "ended_at": record.ended_at, "end_reason": reason, "codec": "h264",
                "container": "mp4", "reencoded": False, "segments": record.segments}
        if record.truncated_by_crash:
            body["truncated_by_crash"] = True
            body["partial_segments"] = partial or []
        data = sign_manifest(body, self.key)
        path = self.folder(record.clip_id) / MANIFEST_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        record.manifest_sha256 = hashlib.sha256(data).hexdigest()
        record.manifest_bytes = len(data)
        record.unreported.append("sealed")
        self.save(record)
        return record

    def get(self, clip_id: str) -> ClipRecord:
        record = self.clips.get(clip_id)
        if record is None:
            raise EvidenceRefused(
                mqtt_pb2.EVIDENCE_ERROR_UNKNOWN_CLIP,
                f"clip {clip_id!r} is not kept by this agent")
        return record

    def hold(self, clip_id: str, until: datetime) -> ClipRecord:
        record = self.get(clip_id)
        if record.state == "purged":
            raise EvidenceRefused(
                mqtt_pb2.EVIDENCE_ERROR_UNKNOWN_CLIP,
                f"clip {clip_id!r} was purged")
        if not record.hold_until or until > datetime.fromisoformat(record.hold_until):
            record.hold_until = until.isoformat()  # a hold only ever extends
        self.save(record)
        return record

    def due_for_purge(self, now: datetime) -> list[ClipRecord]:
        return [r for r in self.clips.values() if r.state == "sealed" and r.retained_until() <= now]

    def purge(self, record: ClipRecord, now: datetime) -> None:
        folder = self.folder(record.clip_id)
        for path in folder.iterdir():
            if path.name != STATE_FILE:
                path.unlink() if path.is_file() else shutil.rmtree(path)
        record.state, record.end_reason = "purged", f"purged at {now.isoformat()} (retention ended)"
        record.unreported.append("purged")
        self.save(record)
        log.info("evidence clip purged", clip=record.clip_id, camera=record.camera_id)

    def read_chunk(self, clip_id: str, name: str, offset: int, length: int) -> bytes:
        record = self.get(clip_id)
        if record.state != "sealed":
            raise EvidenceRefused(
                mqtt_pb2.EVIDENCE_ERROR_NOT_SEALED,
                f"clip {clip_id!r} is {record.state}, not sealed")
        allowed = {MANIFEST_FILE, *(s["file"] for s in record.segments)}
        if name not in allowed:
            raise EvidenceRefused(
                mqtt_pb2.EVIDENCE_ERROR_BAD_REQUEST,
                f"clip {clip_id!r} has no file {name!r}")
        if offset < 0 or not 0 < length <= 4 << 20:
            raise EvidenceRefused(
                mqtt_pb2.EVIDENCE_ERROR_BAD_REQUEST,
                "a chunk is 1 byte to 4 MiB from offset ≥ 0")
        with (self.folder(clip_id) / name).open("rb") as file:
            file.seek(offset)
            return file.read(length)


def _complete_segment(path: Path) -> SegmentInfo | None:
    """The segment's figures if its MP4 is complete and plays; None if it was cut off."""
    try:
        with av.open(str(path)) as container:
            frames = sum(1 for packet in container.demux(container.streams.video[0])
                         if packet.size)
    except (av.FFmpegError, IndexError, OSError):
        return None
    if frames == 0:
        return None
    return SegmentInfo(path.name, file_sha256(path), path.stat().st_size, 0, frames)


def utcnow() -> datetime:
    return datetime.now(UTC)
