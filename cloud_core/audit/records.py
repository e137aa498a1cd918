"""What the audit log holds: an ``AuditEntry`` as a caller submits it, an ``AuditRecord`` as written.

An entry is validated when it is built, so a bad one never reaches the log; a record is an entry
numbered, timed and chained to its predecessor by hash (see :mod:`cloud_core.audit.canonical`).
"""

from __future__ import annotations

import contextlib
import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, TypeVar

from cloud_core.audit.canonical import iso, stored_json

GENESIS_HASH: Final = "0" * 64
MAX_DETAILS_BYTES: Final = 64 * 1024
#: The longest text field a record takes; callers bound their fields more tightly at the door
#: (cloud_core.field_limits), this keeps any path from bloating the log.
MAX_TEXT_CHARS: Final = 4096
MAX_CAMERA_IDS: Final = 1000

_E = TypeVar("_E", bound=enum.StrEnum)


class AuditAction(enum.StrEnum):
    """What a record is about; the register's "what"."""

    ACCESS_GRANT = "access.grant"
    ACCESS_DENY = "access.deny"
    BREAKGLASS_START = "breakglass.start"
    BREAKGLASS_STOP = "breakglass.stop"
    SESSION_OPEN = "session.open"
    SESSION_CLOSE = "session.close"
    INCIDENT_REPORT = "incident.report"
    INCIDENT_CLOSE = "incident.close"
    INCIDENT_EXPIRE = "incident.expire"
    INCIDENT_MOVE = "incident.move"
    INCIDENT_LINK = "incident.link"
    INCIDENT_EXTEND = "incident.extend"
    DISPATCH_ASSIGN = "dispatch.assign"
    DISPATCH_UNASSIGN = "dispatch.unassign"
    DISPATCH_STILL = "dispatch.still"
    DISPATCH_CAMERA = "dispatch.camera"
    OPERATOR_ADD = "operator.add"
    OPERATOR_DISABLE = "operator.disable"
    GRANT_REVOKE = "grant.revoke"
    AUDIT_EXPORT = "audit.export"
    AUDIT_VIEW = "audit.view"
    AUTH_FAIL = "auth.fail"
    SESSION_PREEMPT = "session.preempt"
    EVIDENCE_PRESERVE = "evidence.preserve"  # a clip started at the district's agent
    EVIDENCE_SEAL = "evidence.seal"          # its signed manifest's hash, on the chain
    EVIDENCE_EXPORT = "evidence.export"      # the clip's bytes sent to an agency, via the core
    EVIDENCE_HOLD = "evidence.hold"          # legal hold: retention extended
    EVIDENCE_PURGE = "evidence.purge"        # the agent deleted it at the end of retention
    LOCAL_SIGN_IN = "local.sign_in"          # local mode (core down): a district operator signed in
    LOCAL_VIEW = "local.view"                # local mode: a standing-access view decided by the agent
    LOCAL_VIEW_END = "local.view_end"        # local mode: that view ended
    JOURNAL_INTAKE = "journal.intake"        # an agent's local journal refused at upload


class AuditOutcome(enum.StrEnum):
    """How the recorded action ended; ``reason`` on the entry says why."""

    OK = "ok"
    DENIED = "denied"
    FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One event as a caller submits it: who, what, when, why and the outcome.

    Construction validates and normalises: ``action``/``outcome`` may be given as strings, times
    must be timezone-aware and are converted to UTC, ``camera_ids`` becomes a tuple, ``details``
    becomes a read-only copy that survives a JSON round trip unchanged. Any bad input raises
    ``ValueError`` here, before anything reaches the log, so a bad entry can never spoil a batch
    or leave a half-written record. System actions use an operator id such as ``"system:core"``.
    """

    action: AuditAction
    operator_id: str
    agency: str | None = None
    source_address: str | None = None
    camera_ids: tuple[str, ...] = ()
    incident_id: str | None = None
    purpose: str | None = None
    legal_basis: str | None = None
    outcome: AuditOutcome = AuditOutcome.OK
    reason: str | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    details: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "action", parse_enum(AuditAction, self.action, "audit action"))
        set_(self, "outcome", parse_enum(AuditOutcome, self.outcome, "audit outcome"))
        _check_text("operator_id", self.operator_id, required=True)
        for name in ("agency", "source_address", "incident_id", "purpose", "legal_basis", "reason"):
            _check_text(name, getattr(self, name), required=False)
        set_(self, "camera_ids", _check_camera_ids(self.camera_ids))
        start = check_time("period_start", self.period_start)
        end = check_time("period_end", self.period_end)
        if start is not None and end is not None and end < start:
            raise ValueError(
                f"period_end {end.isoformat()} is before period_start {start.isoformat()}")
        set_(self, "period_start", start)
        set_(self, "period_end", end)
        set_(self, "details", MappingProxyType(_check_details(self.details)))

    def _payload_fields(self) -> dict[str, Any]:
        """This entry's part of the canonical payload (see :mod:`cloud_core.audit`)."""
        return {
            "action": self.action.value,
            "operator_id": self.operator_id,
            "agency": self.agency,
            "source_address": self.source_address,
            "camera_ids": list(self.camera_ids),
            "incident_id": self.incident_id,
            "purpose": self.purpose,
            "legal_basis": self.legal_basis,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "period_start": iso(self.period_start),
            "period_end": iso(self.period_end),
            "details": dict(self.details),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    """An entry as the log holds it: numbered, timed (UTC, when written) and chained."""

    seq: int
    at: datetime
    prev_hash: str
    hash: str
    entry: AuditEntry

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready object: the canonical payload plus ``hash``."""
        payload = record_payload(self.seq, self.at, self.prev_hash, self.entry)
        payload["hash"] = self.hash
        return payload


def record_payload(seq: int, at: datetime, prev_hash: str, entry: AuditEntry) -> dict[str, Any]:
    """The canonical payload of record ``seq``: every column except ``hash``, the hash's input."""
    payload = entry._payload_fields()
    payload.update(seq=seq, at=iso(at), prev_hash=prev_hash)
    return payload


# Validation: any bad input is a ValueError (the entry's contract), wrong types included ---------


def parse_enum(enum_type: type[_E], value: object, what: str) -> _E:
    """``value`` as a member of ``enum_type``; ValueError listing the choices if it is none."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return enum_type(value)
    choices = ", ".join(member.value for member in enum_type)
    raise ValueError(f"unknown {what} {value!r}; expected one of: {choices}")


def check_time(name: str, value: object) -> datetime | None:
    """``value`` (a timezone-aware datetime, or None) in UTC; ValueError otherwise."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ValueError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC); got naive {value.isoformat()}")
    return value.astimezone(UTC)


def _check_text(name: str, value: object, *, required: bool) -> None:
    if value is None:
        if required:
            raise ValueError(f"{name} is required")
        return
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, not {type(value).__name__}")
    if required and not value:
        raise ValueError(f"{name} must not be empty")
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"{name} is {len(value)} characters long; at most {MAX_TEXT_CHARS}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} is not valid Unicode text") from None


def _check_camera_ids(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(
            f"camera_ids must be a sequence of camera ids, not {type(value).__name__}")
    camera_ids = tuple(value)
    if len(camera_ids) > MAX_CAMERA_IDS:
        raise ValueError(f"camera_ids lists {len(camera_ids)} cameras; at most {MAX_CAMERA_IDS}")
    for camera_id in camera_ids:
        _check_text("a camera id", camera_id, required=True)
    return camera_ids


def _check_details(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"details must be a mapping, not {type(value).__name__}")
    try:
        text = stored_json(dict(value))
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"details must be plain JSON text: {exc}") from None
    if size > MAX_DETAILS_BYTES:
        raise ValueError(f"details take {size} bytes as JSON; at most {MAX_DETAILS_BYTES}")
    details: dict[str, Any] = json.loads(text)
    return details
