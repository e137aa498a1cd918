"""The tamper-evident audit log: the provision register of who saw which camera, when and why.

Korea's Personal Information Protection Act asks a CCTV operator to keep a register of every
provision of footage: who (operator, agency, source address), what (cameras, action), when (time,
period viewed), why (incident, purpose, legal basis) and with what outcome. The core appends one
``AuditRecord`` per decision, session, incident change, operator change and export.

The log lives in the core's SQLite file beside the registry, in tables prefixed ``audit_``:

* ``audit_records`` — one row per record. Each carries ``seq`` (1, 2, 3…), the previous record's
  hash and its own ``hash`` = SHA-256 (hex) of the record's canonical JSON: every column except
  ``hash`` as one JSON object (``camera_ids`` as an array, ``details`` as an object, times as
  ISO-8601 UTC strings with microseconds, absent values as null), keys sorted, separators ``,``
  and ``:``, ASCII only (``\\uXXXX`` escapes). The first record's ``prev_hash`` is 64 zeros.
  ``export(fmt="json")`` yields exactly these objects plus ``hash``, so a reviewer can recompute
  every hash without this module.
* ``audit_checkpoints`` — Ed25519 signatures over ``(seq, head_hash, at, key_id)``, written every
  N records, every T seconds while records are unattested, and on close. Deleting records that a
  checkpoint covers, or rewriting history before one, is detectable; the tail after the last
  checkpoint is not, so keep checkpoints frequent and, for stronger evidence, copy them off-host.
* ``audit_meta`` — the log's format and the checkpoint public key (a convenience: verify with a
  trusted key supplied from elsewhere to detect a substituted one).

Triggers refuse UPDATE and DELETE on all three tables, refuse INSERT OR REPLACE, and refuse a
record that does not extend the current head. They stop mistakes, not an attacker holding the
file: the hash chain and the signed checkpoints are what make tampering evident.

Writes are durable before the caller proceeds (WAL, ``synchronous=FULL``). ``AuditLog`` reaches
thousands of appends per second with group commit: one writer thread takes every pending entry,
writes them in one ``BEGIN IMMEDIATE`` transaction and commits once. Sequence numbers and
``prev_hash`` are read from the table inside that transaction, so another writer (``append_sync``
from a CLI while the core runs) never forks the chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import enum
import hashlib
import io
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Final, Literal, Self, TextIO, TypeVar

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cloud_core.exceptions import AuditChainBroken, AuditError

logger = structlog.get_logger(__name__)

GENESIS_HASH: Final = "0" * 64
LOG_FORMAT: Final = "safetynet-audit-v1"
CHECKPOINT_KIND: Final = "safetynet.audit.checkpoint.v1"
MAX_DETAILS_BYTES: Final = 64 * 1024
MAX_SEARCH_LIMIT: Final = 1000
_BUSY_TIMEOUT_S: Final = 10.0
_MAX_REPORTED_PROBLEMS: Final = 100

ExportFormat = Literal["csv", "json"]

_T = TypeVar("_T")
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
    OPERATOR_ADD = "operator.add"
    OPERATOR_DISABLE = "operator.disable"
    GRANT_REVOKE = "grant.revoke"
    AUDIT_EXPORT = "audit.export"
    AUDIT_VIEW = "audit.view"
    EVIDENCE_PRESERVE = "evidence.preserve"  # a clip started at the district's agent
    EVIDENCE_SEAL = "evidence.seal"          # its signed manifest's hash, on the chain
    EVIDENCE_EXPORT = "evidence.export"      # the clip's bytes sent to an agency, via the core
    EVIDENCE_HOLD = "evidence.hold"          # legal hold: retention extended
    EVIDENCE_PURGE = "evidence.purge"        # the agent deleted it at the end of retention


class AuditOutcome(enum.StrEnum):
    """How the recorded action ended; ``reason`` on the entry says why."""

    OK = "ok"
    DENIED = "denied"
    FAILED = "failed"


# Domain types ------------------------------------------------------------------------------------


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
        set_(self, "action", _parse_enum(AuditAction, self.action, "audit action"))
        set_(self, "outcome", _parse_enum(AuditOutcome, self.outcome, "audit outcome"))
        _check_text("operator_id", self.operator_id, required=True)
        for name in ("agency", "source_address", "incident_id", "purpose", "legal_basis", "reason"):
            _check_text(name, getattr(self, name), required=False)
        set_(self, "camera_ids", _check_camera_ids(self.camera_ids))
        start = _check_time("period_start", self.period_start)
        end = _check_time("period_end", self.period_end)
        if start is not None and end is not None and end < start:
            raise ValueError(
                f"period_end {end.isoformat()} is before period_start {start.isoformat()}")
        set_(self, "period_start", start)
        set_(self, "period_end", end)
        set_(self, "details", MappingProxyType(_check_details(self.details)))

    def _payload_fields(self) -> dict[str, Any]:
        """This entry's part of the canonical payload (see the module docstring)."""
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
            "period_start": _iso(self.period_start),
            "period_end": _iso(self.period_end),
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
        payload = _payload(self.seq, self.at, self.prev_hash, self.entry)
        payload["hash"] = self.hash
        return payload


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """A signed statement that record ``seq`` of the log had hash ``head_hash`` at ``at``."""

    seq: int
    head_hash: str
    at: datetime
    key_id: str
    signature: str

    def signed_message(self) -> bytes:
        """The bytes the signature covers."""
        return _checkpoint_message(self.seq, self.head_hash, self.at, self.key_id)

    def is_signed_by(self, public_key: Ed25519PublicKey) -> bool:
        """Whether ``signature`` is ``public_key``'s signature over this checkpoint."""
        try:
            public_key.verify(bytes.fromhex(self.signature), self.signed_message())
        except (InvalidSignature, ValueError):
            return False
        return True


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """A short name for a checkpoint key: the first 16 hex digits of SHA-256 of its raw bytes."""
    return hashlib.sha256(_raw_public_key(public_key)).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class CheckpointSigner:
    """The core's checkpoint key: signs ``(seq, head_hash, at, key_id)`` with Ed25519."""

    private_key: Ed25519PrivateKey = field(repr=False)
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_id", key_id_of(self.private_key.public_key()))

    @classmethod
    def generate(cls) -> CheckpointSigner:
        """A signer with a fresh key (tests, first start of a pilot)."""
        return cls(Ed25519PrivateKey.generate())

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def sign(self, seq: int, head_hash: str, at: datetime) -> Checkpoint:
        """A checkpoint for head ``seq``/``head_hash``, signed now."""
        at = at.astimezone(UTC)
        message = _checkpoint_message(seq, head_hash, at, self.key_id)
        signature = self.private_key.sign(message).hex()
        return Checkpoint(
            seq=seq, head_hash=head_hash, at=at, key_id=self.key_id, signature=signature)


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyReport:
    """What ``verify`` found.

    ``broken_seq``/``problem`` name the first broken record and what is wrong with it (0 when
    the problem is the log's key and no checkpoint exists); ``problems`` lists every finding (at
    most 100), in seq order. ``key_trusted`` is False when
    the checkpoints were checked against the public key stored in the file itself, which proves
    nothing against someone who could rewrite the file. ``unattested`` counts the records after
    the last good checkpoint, whose deletion no checkpoint would reveal. ``warnings`` are signs of
    interference that do not break the chain (missing triggers).
    """

    ok: bool
    records: int
    head_seq: int
    head_hash: str
    checkpoints: int
    last_checkpoint_seq: int | None
    key_id: str | None
    key_trusted: bool
    broken_seq: int | None = None
    problem: str | None = None
    problems: tuple[tuple[int, str], ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def unattested(self) -> int:
        return self.head_seq - (self.last_checkpoint_seq or 0)

    def raise_if_broken(self) -> None:
        """Raise ``AuditChainBroken`` for the first problem, if any."""
        if self.broken_seq is not None and self.problem is not None:
            raise AuditChainBroken(self.broken_seq, self.problem)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditLogConfig:
    """How often ``AuditLog`` signs checkpoints and how much it lets callers queue.

    ``checkpoint_every`` records or ``checkpoint_interval`` seconds after the first unattested
    record, whichever comes first; always on close. ``max_pending`` bounds the queue: when it is
    full, ``append`` waits (an audit record is never dropped). ``max_batch`` bounds one commit.
    """

    checkpoint_every: int = 1000
    checkpoint_interval: float = 60.0
    max_pending: int = 10_000
    max_batch: int = 1000

    def __post_init__(self) -> None:
        for name in ("checkpoint_every", "max_pending", "max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not self.checkpoint_interval > 0:
            raise ValueError("checkpoint_interval must be positive")


# The async log ----------------------------------------------------------------------------------


class AuditLogState(enum.StrEnum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


_Pending = tuple[AuditEntry, "asyncio.Future[AuditRecord]"]
_STOP: Final = object()


class AuditLog:
    """The core's audit log: ``async with AuditLog.open(path, signer=s) as log``.

    One writer thread owns the log's sqlite3 connection (``synchronous=FULL``). ``append`` queues
    an entry and returns its record once the transaction holding it has committed; the writer
    commits every entry pending at that moment in one transaction (group commit). Closing writes
    what is queued, signs a final checkpoint and closes the connection.
    """

    def __init__(
        self,
        db_path: Path,
        *,
        signer: CheckpointSigner | None = None,
        config: AuditLogConfig | None = None,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
    ) -> None:
        self._db_path = Path(db_path)
        self._signer = signer
        self._config = config or AuditLogConfig()
        self._on_checkpoint = on_checkpoint
        self._state = AuditLogState.NEW
        self._log = logger.bind(db=str(self._db_path))
        self._queue: asyncio.Queue[_Pending | object] = asyncio.Queue(self._config.max_pending + 1)
        self._slots = asyncio.Semaphore(self._config.max_pending)
        self._queue_full_logged = False
        self._executor: ThreadPoolExecutor | None = None
        self._store: _AuditStore | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._unattested = False
        self._last_checkpoint = time.monotonic()

    @classmethod
    def open(
        cls,
        db_path: Path,
        *,
        signer: CheckpointSigner | None = None,
        config: AuditLogConfig | None = None,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
    ) -> AuditLog:
        """A log on ``db_path``, opened by ``async with``. Without a signer, no checkpoints.

        ``on_checkpoint`` is called on the event loop with each checkpoint once it is committed:
        the place to publish checkpoints off-host, which is what makes deleting the newest
        records and their checkpoints together detectable.
        """
        return cls(db_path, signer=signer, config=config, on_checkpoint=on_checkpoint)

    async def __aenter__(self) -> Self:
        await self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def state(self) -> AuditLogState:
        return self._state

    @property
    def db_path(self) -> Path:
        return self._db_path

    async def append(self, entry: AuditEntry) -> AuditRecord:
        """Append ``entry``; return its record once it is durable on disk.

        Raises ``AuditError`` when the log is not open or the write failed; the caller must then
        treat the audited action as not having happened (fail closed). Waits while the queue is
        full. If the caller is cancelled after its entry was queued, the record is still written.
        """
        if not isinstance(entry, AuditEntry):
            raise TypeError(f"append takes an AuditEntry, not {type(entry).__name__}")
        self._require_open()
        if self._slots.locked() and not self._queue_full_logged:
            self._queue_full_logged = True
            self._log.warning("audit_queue_full", max_pending=self._config.max_pending,
                              policy="caller waits")
        await self._slots.acquire()
        try:
            self._require_open()
        except AuditError:
            self._slots.release()
            raise
        future: asyncio.Future[AuditRecord] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((entry, future))
        return await future

    async def checkpoint(self) -> Checkpoint | None:
        """Sign a checkpoint of the current head now; None if it is already attested."""
        self._require_open()
        return await self._checkpoint_in_thread()

    async def search(
        self,
        *,
        operator_id: str | None = None,
        camera_id: str | None = None,
        incident_id: str | None = None,
        action: AuditAction | str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before_seq: int | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """``search`` on this log's file, off the event loop."""
        return await asyncio.to_thread(
            search, self._db_path, operator_id=operator_id, camera_id=camera_id,
            incident_id=incident_id, action=action, since=since, until=until,
            before_seq=before_seq, limit=limit,
        )

    async def close(self) -> None:
        """Write what is queued, sign a final checkpoint, close. Idempotent.

        Appends that were still waiting for room in the queue fail with ``AuditError``.
        """
        if self._state is AuditLogState.NEW:
            self._set_state(AuditLogState.CLOSED)
            self._closed.set()
            return
        if self._state is AuditLogState.CLOSED:
            return
        if self._state is AuditLogState.CLOSING:
            await self._closed.wait()
            return
        self._set_state(AuditLogState.CLOSING)
        self._queue.put_nowait(_STOP)
        try:
            assert self._writer is not None
            await self._writer
        finally:
            try:
                await self._checkpoint_in_thread()
            finally:
                await self._in_thread(self._close_store)
                assert self._executor is not None
                self._executor.shutdown(wait=True)
                self._set_state(AuditLogState.CLOSED)
                self._closed.set()

    # Internals ---------------------------------------------------------------------------------

    async def _start(self) -> None:
        if self._state is not AuditLogState.NEW:
            raise AuditError(f"cannot open an audit log in state {self._state.value!r}")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")
        try:
            self._store = await self._in_thread(
                _AuditStore.open, self._db_path, self._signer, self._config.checkpoint_every
            )
        except BaseException:
            self._executor.shutdown(wait=False)
            self._set_state(AuditLogState.CLOSED)
            self._closed.set()
            raise
        self._unattested = self._signer is not None and self._store.unattested
        self._last_checkpoint = time.monotonic()
        self._writer = asyncio.create_task(self._run_writer(), name=f"audit-writer {self._db_path}")
        self._set_state(AuditLogState.OPEN)

    def _set_state(self, state: AuditLogState) -> None:
        self._log.info("audit_log_state", previous=self._state.value, state=state.value)
        self._state = state

    def _require_open(self) -> None:
        if self._state is not AuditLogState.OPEN:
            raise AuditError(f"the audit log is {self._state.value}, not open")
        if self._writer is not None and self._writer.done():
            raise AuditError("the audit log's writer has stopped; close the log")

    async def _in_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` on the writer thread, the only thread that touches the connection."""
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _run_writer(self) -> None:
        batch: list[_Pending] = []
        try:
            stopping = False
            while not stopping:
                try:
                    async with asyncio.timeout(self._checkpoint_delay()):
                        item = await self._queue.get()
                except TimeoutError:
                    await self._timed_checkpoint()
                    continue
                while True:
                    if item is _STOP:
                        stopping = True
                        break
                    batch.append(item)  # type: ignore[arg-type]
                    self._slots.release()
                    if len(batch) >= self._config.max_batch:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                if not self._slots.locked():
                    self._queue_full_logged = False
                if batch:
                    await self._write(batch)
                    batch = []
        finally:
            self._fail_unresolved(batch)

    async def _write(self, batch: list[_Pending]) -> None:
        assert self._store is not None
        entries = [entry for entry, _ in batch]
        time_due = self._checkpoint_delay() == 0.0
        try:
            records, checkpoint = await self._in_thread(self._store.write, entries, time_due)
        except AuditError as exc:
            self._log.error("audit_write_failed", records=len(batch), error=str(exc))
            for _, future in batch:
                if not future.done():
                    error = AuditError(f"the audit record was not written: {exc}")
                    error.__cause__ = exc
                    future.set_exception(error)
            return
        for (_, future), record in zip(batch, records, strict=True):
            if not future.done():
                future.set_result(record)
        if checkpoint is not None:
            self._note_checkpoint(checkpoint)
            await self._flush_wal()
        elif not self._unattested and self._signer is not None:
            self._unattested = True
            self._last_checkpoint = time.monotonic()

    async def _checkpoint_in_thread(self) -> Checkpoint | None:
        assert self._store is not None
        checkpoint = await self._in_thread(self._store.checkpoint_now)
        if checkpoint is not None:
            self._note_checkpoint(checkpoint)
            await self._flush_wal()
        else:
            self._unattested = False
        return checkpoint

    async def _timed_checkpoint(self) -> None:
        """The periodic checkpoint; a failure is logged and retried one interval later."""
        try:
            await self._checkpoint_in_thread()
        except AuditError as exc:
            self._last_checkpoint = time.monotonic()
            self._log.error("audit_checkpoint_failed", error=str(exc))

    async def _flush_wal(self) -> None:
        assert self._store is not None
        try:
            await self._in_thread(self._store.flush_wal)
        except AuditError as exc:
            self._log.warning("audit_wal_flush_failed", error=str(exc))

    def _note_checkpoint(self, checkpoint: Checkpoint) -> None:
        self._unattested = False
        self._last_checkpoint = time.monotonic()
        self._log.debug("audit_checkpoint", seq=checkpoint.seq, key_id=checkpoint.key_id)
        if self._on_checkpoint is not None:
            try:
                self._on_checkpoint(checkpoint)
            except Exception:
                self._log.exception("audit_checkpoint_callback_failed", seq=checkpoint.seq)

    def _checkpoint_delay(self) -> float | None:
        """Seconds until a time-based checkpoint is due; None when none is pending."""
        if not self._unattested:
            return None
        elapsed = time.monotonic() - self._last_checkpoint
        return max(0.0, self._config.checkpoint_interval - elapsed)

    def _close_store(self) -> None:
        assert self._store is not None
        self._store.close(final_checkpoint=False)

    def _fail_unresolved(self, batch: list[_Pending]) -> None:
        """Fail every future the writer can no longer resolve (it stopped or crashed)."""
        pending = list(batch)
        while True:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if item is not _STOP:
                pending.append(item)  # type: ignore[arg-type]
                self._slots.release()
        for _, future in pending:
            if not future.done():
                future.set_exception(
                    AuditError("the audit writer stopped before writing this record"))


# The synchronous API (CLI tools) ----------------------------------------------------------------


def append_sync(
    db_path: Path, entry: AuditEntry, *, signer: CheckpointSigner | None = None
) -> AuditRecord:
    """Append one entry durably from code without an event loop (the CLI when the core is down).

    Safe while the core's ``AuditLog`` writes the same file: the head is read inside the write
    transaction. With a signer, a checkpoint covering the new record is signed before returning.
    """
    if not isinstance(entry, AuditEntry):
        raise TypeError(f"append_sync takes an AuditEntry, not {type(entry).__name__}")
    store = _AuditStore.open(Path(db_path), signer, checkpoint_every=1)
    try:
        records, checkpoint = store.write([entry], checkpoint_due=True)
        if checkpoint is not None:
            store.flush_wal()
    finally:
        store.close(final_checkpoint=False)
    return records[0]


# Storage ----------------------------------------------------------------------------------------

_RECORD_COLUMNS: Final = (
    "seq", "at", "action", "operator_id", "agency", "source_address", "camera_ids", "incident_id",
    "purpose", "legal_basis", "outcome", "reason", "period_start", "period_end", "details",
    "prev_hash", "hash",
)

_APPEND_ONLY: Final = "audit log is append-only"

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS audit_records (
        seq INTEGER PRIMARY KEY CHECK (seq >= 1),
        at TEXT NOT NULL,
        action TEXT NOT NULL,
        operator_id TEXT NOT NULL,
        agency TEXT,
        source_address TEXT,
        camera_ids TEXT NOT NULL,
        incident_id TEXT,
        purpose TEXT,
        legal_basis TEXT,
        outcome TEXT NOT NULL,
        reason TEXT,
        period_start TEXT,
        period_end TEXT,
        details TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS audit_records_at ON audit_records (at)",
    "CREATE INDEX IF NOT EXISTS audit_records_operator ON audit_records (operator_id, seq)",
    "CREATE INDEX IF NOT EXISTS audit_records_incident ON audit_records (incident_id, seq)",
    """CREATE TABLE IF NOT EXISTS audit_checkpoints (
        id INTEGER PRIMARY KEY,
        seq INTEGER NOT NULL,
        head_hash TEXT NOT NULL,
        at TEXT NOT NULL,
        key_id TEXT NOT NULL,
        signature TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS audit_meta (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    f"""CREATE TRIGGER IF NOT EXISTS audit_records_extend_head
        BEFORE INSERT ON audit_records
        WHEN NEW.seq IS NOT (SELECT coalesce(max(seq), 0) + 1 FROM audit_records)
          OR NEW.prev_hash IS NOT coalesce(
               (SELECT hash FROM audit_records ORDER BY seq DESC LIMIT 1), '{GENESIS_HASH}')
        BEGIN SELECT RAISE(ABORT, 'audit record does not extend the chain head'); END""",
    *(
        f"""CREATE TRIGGER IF NOT EXISTS {table}_no_{verb.lower()}
            BEFORE {verb} ON {table}
            BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END"""
        for table in ("audit_records", "audit_checkpoints", "audit_meta")
        for verb in ("UPDATE", "DELETE")
    ),
    f"""CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_replace
        BEFORE INSERT ON audit_checkpoints
        WHEN EXISTS (SELECT 1 FROM audit_checkpoints WHERE id = NEW.id)
        BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS audit_meta_no_replace
        BEFORE INSERT ON audit_meta
        WHEN EXISTS (SELECT 1 FROM audit_meta WHERE name = NEW.name)
        BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END""",
)

_TRIGGERS: Final = (
    "audit_records_extend_head",
    *(f"{table}_no_{verb}" for table in ("audit_records", "audit_checkpoints", "audit_meta")
      for verb in ("update", "delete")),
    "audit_checkpoints_no_replace",
    "audit_meta_no_replace",
)

_INSERT_RECORD: Final = (
    f"INSERT INTO audit_records ({', '.join(_RECORD_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _RECORD_COLUMNS)})"
)
_INSERT_CHECKPOINT: Final = (
    "INSERT INTO audit_checkpoints (seq, head_hash, at, key_id, signature) VALUES (?, ?, ?, ?, ?)"
)


class _AuditStore:
    """The writing connection: schema, chained inserts, checkpoints. One thread at a time."""

    def __init__(
        self, conn: sqlite3.Connection, signer: CheckpointSigner | None, checkpoint_every: int
    ) -> None:
        self._conn = conn
        self._signer = signer
        self._checkpoint_every = checkpoint_every
        head_seq, _ = self._head()
        self.unattested = head_seq > self._last_checkpoint_seq()

    @classmethod
    def open(
        cls, db_path: Path, signer: CheckpointSigner | None, checkpoint_every: int
    ) -> _AuditStore:
        try:
            conn = sqlite3.connect(db_path, isolation_level=None, timeout=_BUSY_TIMEOUT_S)
        except sqlite3.Error as exc:
            raise AuditError(f"cannot open the audit log at {db_path}: {exc}") from exc
        try:
            mode = _switch_to_wal(conn)
            if mode != "wal":
                raise AuditError(f"{db_path}: cannot switch to WAL (journal mode is {mode})")
            conn.execute("PRAGMA synchronous=FULL")
            with _immediate(conn, f"cannot create the audit tables in {db_path}"):
                for statement in _SCHEMA:
                    conn.execute(statement)
                _check_meta(conn, signer)
            return cls(conn, signer, checkpoint_every)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise AuditError(f"cannot open the audit log at {db_path}: {exc}") from exc
            raise

    def write(
        self, entries: Sequence[AuditEntry], checkpoint_due: bool
    ) -> tuple[list[AuditRecord], Checkpoint | None]:
        """Append ``entries`` after the current head in one durable transaction."""
        now = datetime.now(UTC)
        records: list[AuditRecord] = []
        rows: list[tuple[Any, ...]] = []
        with _immediate(self._conn, "cannot append to the audit log"):
            seq, prev_hash = self._head()
            for entry in entries:
                seq += 1
                payload = _payload(seq, now, prev_hash, entry)
                record_hash = _record_hash(payload)
                rows.append(_row(payload, record_hash))
                records.append(
                    AuditRecord(seq=seq, at=now, prev_hash=prev_hash, hash=record_hash, entry=entry)
                )
                prev_hash = record_hash
            self._conn.executemany(_INSERT_RECORD, rows)
            checkpoint = self._checkpoint_locked(seq, prev_hash, now, force=checkpoint_due)
        return records, checkpoint

    def checkpoint_now(self) -> Checkpoint | None:
        """Sign the current head if a signer is set and the head is not yet attested."""
        if self._signer is None:
            return None
        with _immediate(self._conn, "cannot write an audit checkpoint"):
            seq, head_hash = self._head()
            return self._checkpoint_locked(seq, head_hash, datetime.now(UTC), force=True)

    def flush_wal(self) -> None:
        """Copy the WAL into the main file so that a plain copy of it holds every signed record.

        PASSIVE: it never waits for readers, so it may copy only part; SQLite's own automatic
        checkpoints and the close of the last connection do the rest.
        """
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            raise AuditError(f"cannot checkpoint the WAL: {exc}") from exc

    def close(self, *, final_checkpoint: bool = True) -> None:
        try:
            if final_checkpoint and self.checkpoint_now() is not None:
                self.flush_wal()
        finally:
            self._conn.close()

    def _head(self) -> tuple[int, str]:
        row = self._conn.execute(
            "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return (0, GENESIS_HASH) if row is None else (int(row[0]), str(row[1]))

    def _last_checkpoint_seq(self) -> int:
        row = self._conn.execute(
            "SELECT seq FROM audit_checkpoints ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return 0 if row is None else int(row[0])

    def _checkpoint_locked(
        self, head_seq: int, head_hash: str, now: datetime, *, force: bool
    ) -> Checkpoint | None:
        if self._signer is None:
            return None
        last_seq = self._last_checkpoint_seq()
        if head_seq <= last_seq or (not force and head_seq - last_seq < self._checkpoint_every):
            return None
        checkpoint = self._signer.sign(head_seq, head_hash, now)
        self._conn.execute(
            _INSERT_CHECKPOINT,
            (checkpoint.seq, checkpoint.head_hash, _iso(checkpoint.at), checkpoint.key_id,
             checkpoint.signature),
        )
        return checkpoint


def _switch_to_wal(conn: sqlite3.Connection) -> str:
    """``PRAGMA journal_mode=WAL``, retried briefly: when several writers create the file at once,
    SQLite can answer 'database is locked' to the switch without waiting in its busy handler."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection, what: str) -> Iterator[None]:
    """BEGIN IMMEDIATE … COMMIT; ROLLBACK on any error; sqlite3 errors become AuditError."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise AuditError(f"{what}: {exc}") from exc


def _check_meta(conn: sqlite3.Connection, signer: CheckpointSigner | None) -> None:
    meta = dict(conn.execute("SELECT name, value FROM audit_meta").fetchall())
    if "format" not in meta:
        conn.execute("INSERT INTO audit_meta (name, value) VALUES ('format', ?)", (LOG_FORMAT,))
    elif meta["format"] != LOG_FORMAT:
        raise AuditError(f"unsupported audit log format {meta['format']!r}")
    if signer is None:
        return
    public_key_hex = _raw_public_key(signer.public_key).hex()
    stored = meta.get("public_key")
    if stored is None:
        conn.executemany(
            "INSERT INTO audit_meta (name, value) VALUES (?, ?)",
            [("public_key", public_key_hex), ("key_id", signer.key_id)],
        )
    elif stored != public_key_hex:
        raise AuditError(
            f"the audit log's checkpoints are signed by key {meta.get('key_id')!r}, "
            f"not by the configured key {signer.key_id!r}"
        )


# Reading: verify, search, export ---------------------------------------------------------------


@contextlib.contextmanager
def _open_readonly(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection that never writes ``db_path``, in one read transaction.

    A copy of the file without its ``-wal`` holds everything up to the last WAL checkpoint
    (the log runs one after each signed checkpoint). If SQLite cannot open it read-only (say, on
    read-only media where it cannot create the ``-shm`` file) and no ``-wal`` exists, it is
    opened as immutable.
    """
    db_path = Path(db_path)
    if not db_path.is_file():
        raise AuditError(f"no audit log at {db_path}")
    uri = f"{db_path.resolve().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=_BUSY_TIMEOUT_S)
    try:
        try:
            conn.execute("BEGIN")
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        except sqlite3.OperationalError:
            if Path(f"{db_path}-wal").exists():
                raise
            conn.close()
            conn = sqlite3.connect(f"{uri}&immutable=1", uri=True, isolation_level=None)
            conn.execute("BEGIN")
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        missing = {"audit_records", "audit_checkpoints", "audit_meta"} - tables
        if missing:
            raise AuditError(f"{db_path} holds no audit log (missing {', '.join(sorted(missing))})")
        conn.row_factory = sqlite3.Row
        yield conn
    except sqlite3.Error as exc:
        raise AuditError(f"cannot read the audit log at {db_path}: {exc}") from exc
    finally:
        conn.close()


def verify(db_path: Path, public_key: Ed25519PublicKey | None = None) -> VerifyReport:
    """Check the chain and the checkpoints of the log in ``db_path``, offline, read-only.

    Give the trusted ``public_key`` (from the core's configuration, not from the file) to detect
    forged checkpoints after a key substitution; without it the key stored in the file is used
    and the report says ``key_trusted=False``. Raises ``AuditError`` only when the file cannot be
    read as an audit log at all; every integrity problem is in the report.
    """
    with _open_readonly(Path(db_path)) as conn:
        meta = {row["name"]: row["value"]
                for row in conn.execute("SELECT name, value FROM audit_meta")}
        checkpoints = [
            dict(row) for row in conn.execute(
                "SELECT id, seq, head_hash, at, key_id, signature "
                "FROM audit_checkpoints ORDER BY id")
        ]
        problems: list[tuple[int, str]] = []
        wanted = {int(cp["seq"]) for cp in checkpoints}
        hashes_at: dict[int, str] = {}
        count, head_seq, head_hash = 0, 0, GENESIS_HASH
        records = conn.execute(
            f"SELECT {', '.join(_RECORD_COLUMNS)} FROM audit_records ORDER BY seq")
        for row in records:
            count += 1
            seq = int(row["seq"])
            problem = _check_record(row, expected_seq=head_seq + 1, prev_hash=head_hash)
            if problem is not None and len(problems) < _MAX_REPORTED_PROBLEMS:
                problems.append((min(seq, head_seq + 1), problem))
            head_seq, head_hash = seq, str(row["hash"])
            if seq in wanted:
                hashes_at[seq] = head_hash
        triggers = {row[0] for row in
                    conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}

    key, key_trusted, key_problem = _verification_key(meta, public_key)
    key_id = None if key is None else key_id_of(key)
    last_good: int | None = None
    previous_seq = 0
    for cp in checkpoints:
        cp_seq = int(cp["seq"])
        problem = _check_checkpoint(cp, key, key_id, head_seq, hashes_at.get(cp_seq), previous_seq)
        if problem is None:
            last_good = cp_seq if last_good is None else max(last_good, cp_seq)
        elif len(problems) < 2 * _MAX_REPORTED_PROBLEMS:
            problems.append((min(cp_seq, head_seq + 1), problem))
        previous_seq = max(previous_seq, cp_seq)
    if key_problem is not None:
        first_cp = min((int(cp["seq"]) for cp in checkpoints), default=0)
        problems.append((min(first_cp, head_seq + 1) if checkpoints else 0, key_problem))

    problems.sort(key=lambda item: item[0])
    warnings = tuple(
        f"trigger {name} is missing: someone altered the audit tables"
        for name in _TRIGGERS if name not in triggers
    )
    first = problems[0] if problems else None
    return VerifyReport(
        ok=not problems,
        records=count,
        head_seq=head_seq,
        head_hash=head_hash,
        checkpoints=len(checkpoints),
        last_checkpoint_seq=last_good,
        key_id=key_id,
        key_trusted=key_trusted,
        broken_seq=None if first is None else first[0],
        problem=None if first is None else first[1],
        problems=tuple(problems[:_MAX_REPORTED_PROBLEMS]),
        warnings=warnings,
    )


def _check_record(row: sqlite3.Row, *, expected_seq: int, prev_hash: str) -> str | None:
    """What is wrong with one record given its predecessor, or None.

    Checks in an order that names the cause: a gap (deleted; the first missing seq is the broken
    one), a broken link (reordered, deleted, or the predecessor rewritten), then the record's own
    hash (edited). The caller chains on with the stored hash, so one edit is one finding.
    """
    seq = int(row["seq"])
    if seq != expected_seq:
        missing = f"{expected_seq}" if seq == expected_seq + 1 else f"{expected_seq}..{seq - 1}"
        return f"records {missing} are missing before record {seq}: deleted"
    if row["prev_hash"] != prev_hash:
        return (f"prev_hash does not match the hash of record {seq - 1}: records were reordered "
                f"or deleted, or record {seq - 1} was rewritten")
    try:
        payload = _payload_from_row(row)
    except ValueError as exc:
        return f"unreadable record ({exc}): edited"
    if _record_hash(payload) != row["hash"]:
        return "hash does not match the record's contents: edited"
    return None


def _verification_key(
    meta: Mapping[str, str], trusted: Ed25519PublicKey | None
) -> tuple[Ed25519PublicKey | None, bool, str | None]:
    """The key to check checkpoints with, whether it is trusted, and a problem with the file's."""
    stored_hex = meta.get("public_key")
    stored: Ed25519PublicKey | None = None
    problem: str | None = None
    if stored_hex is not None:
        try:
            stored = Ed25519PublicKey.from_public_bytes(bytes.fromhex(stored_hex))
        except ValueError:
            problem = "the public key stored in audit_meta is malformed"
    if trusted is None:
        return stored, False, problem
    if stored is not None and _raw_public_key(stored) != _raw_public_key(trusted):
        problem = (f"the public key stored in the file (key id {key_id_of(stored)}) is not the "
                   f"trusted key (key id {key_id_of(trusted)}): substituted key")
    return trusted, True, problem


def _check_checkpoint(
    cp: Mapping[str, Any],
    key: Ed25519PublicKey | None,
    key_id: str | None,
    head_seq: int,
    record_hash: str | None,
    previous_seq: int,
) -> str | None:
    seq = int(cp["seq"])
    name = f"checkpoint {cp['id']} (record {seq})"
    if key is None:
        return f"{name} cannot be checked: no public key given or stored"
    try:
        checkpoint = Checkpoint(seq=seq, head_hash=str(cp["head_hash"]),
                                at=_parse_time(str(cp["at"])), key_id=str(cp["key_id"]),
                                signature=str(cp["signature"]))
    except ValueError as exc:
        return f"{name} is unreadable ({exc}): forged checkpoint"
    if checkpoint.key_id != key_id or not checkpoint.is_signed_by(key):
        return f"{name} has a bad signature under key id {key_id}: forged checkpoint"
    if seq > head_seq:
        return (f"{name} attests records up to {seq} but the log ends at {head_seq}: "
                "records were truncated")
    if record_hash is None:
        return f"{name} attests record {seq}, which is missing: deleted"
    if record_hash != checkpoint.head_hash:
        return f"{name} attests a different hash for record {seq}: history was rewritten"
    if seq < previous_seq:
        return f"{name} goes back from record {previous_seq}: checkpoints were reordered"
    return None


def search(
    db_path: Path,
    *,
    operator_id: str | None = None,
    camera_id: str | None = None,
    incident_id: str | None = None,
    action: AuditAction | str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_seq: int | None = None,
    limit: int = 100,
) -> list[AuditRecord]:
    """Records matching every given filter, newest first (the console's audit page).

    ``since`` is inclusive and ``until`` exclusive, on the record time ``at``. Page with
    ``before_seq`` = the smallest seq of the previous page.
    """
    if not 1 <= limit <= MAX_SEARCH_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_SEARCH_LIMIT}")
    clauses, params = _time_clauses(since, until)
    if operator_id is not None:
        clauses.append("operator_id = ?")
        params.append(operator_id)
    if incident_id is not None:
        clauses.append("incident_id = ?")
        params.append(incident_id)
    if action is not None:
        clauses.append("action = ?")
        params.append(_parse_enum(AuditAction, action, "audit action").value)
    if camera_id is not None:
        clauses.append("EXISTS (SELECT 1 FROM json_each(audit_records.camera_ids) WHERE value = ?)")
        params.append(camera_id)
    if before_seq is not None:
        clauses.append("seq < ?")
        params.append(before_seq)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = (f"SELECT {', '.join(_RECORD_COLUMNS)} FROM audit_records {where} "
           f"ORDER BY seq DESC LIMIT ?")
    with _open_readonly(Path(db_path)) as conn:
        rows = conn.execute(sql, [*params, limit]).fetchall()
    return [_record_from_row(row) for row in rows]


def export(
    db_path: Path,
    since: datetime | None = None,
    until: datetime | None = None,
    fmt: ExportFormat = "csv",
) -> str:
    """The records written in [since, until) as CSV or JSON text (the monthly review).

    Callers record the export itself with an ``audit.export`` entry: only they know who asked.
    """
    out = io.StringIO(newline="")
    write_export(db_path, out, since=since, until=until, fmt=fmt)
    return out.getvalue()


def write_export(
    db_path: Path,
    out: TextIO,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    fmt: ExportFormat = "csv",
) -> int:
    """Stream the export of ``export`` into ``out``; return the number of records.

    CSV: a header row of the column names, one row per record, ``camera_ids`` joined with ``;``,
    ``details`` as JSON, absent values empty. Values are exported verbatim, so a cell may begin
    with ``=``; spreadsheet users should import it as text. JSON: a list of objects, each the
    record's canonical payload plus ``hash``. Rows are exported as stored, even if tampered
    with: run ``verify`` to judge them.
    """
    if fmt not in ("csv", "json"):
        raise ValueError(f"unknown export format {fmt!r}; expected 'csv' or 'json'")
    clauses, params = _time_clauses(since, until)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = f"SELECT {', '.join(_RECORD_COLUMNS)} FROM audit_records {where} ORDER BY seq"
    count = 0
    with _open_readonly(Path(db_path)) as conn:
        rows = conn.execute(sql, params)
        if fmt == "csv":
            writer = csv.writer(out, lineterminator="\r\n")
            writer.writerow(_RECORD_COLUMNS)
            for row in rows:
                writer.writerow(_csv_cells(row))
                count += 1
        else:
            out.write("[")
            for row in rows:
                try:
                    item = {**_payload_from_row(row), "hash": row["hash"]}
                except ValueError:
                    item = dict(row)
                out.write(",\n" if count else "\n")
                out.write(json.dumps(item, sort_keys=True, ensure_ascii=False))
                count += 1
            out.write("\n]\n" if count else "]\n")
    return count


def snapshot(db_path: Path, dest: Path) -> None:
    """Copy the log's file to ``dest`` consistently while the core writes it (SQLite backup).

    A plain file copy misses what is still in the ``-wal`` file; this copy holds everything
    committed when it ran. ``dest`` must not exist.
    """
    dest = Path(dest)
    if dest.exists():
        raise AuditError(f"{dest} already exists")
    with _open_readonly(Path(db_path)) as source:
        source.execute("COMMIT")
        target = sqlite3.connect(dest)
        try:
            source.backup(target)
        except sqlite3.Error as exc:
            raise AuditError(f"cannot copy the audit log to {dest}: {exc}") from exc
        finally:
            target.close()


def _time_clauses(since: datetime | None, until: datetime | None) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    start = _check_time("since", since)
    end = _check_time("until", until)
    if start is not None:
        clauses.append("at >= ?")
        params.append(_iso(start))
    if end is not None:
        clauses.append("at < ?")
        params.append(_iso(end))
    return clauses, params


def _csv_cells(row: sqlite3.Row) -> list[str]:
    cells: list[str] = []
    for column in _RECORD_COLUMNS:
        value = row[column]
        if column == "camera_ids":
            try:
                value = ";".join(str(camera) for camera in json.loads(value))
            except (TypeError, ValueError):
                pass
        cells.append("" if value is None else str(value))
    return cells


# Serialisation -----------------------------------------------------------------------------------


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def _payload(seq: int, at: datetime, prev_hash: str, entry: AuditEntry) -> dict[str, Any]:
    payload = entry._payload_fields()
    payload.update(seq=seq, at=_iso(at), prev_hash=prev_hash)
    return payload


def _record_hash(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical_json(payload).encode("ascii")).hexdigest()


def _stored_json(value: Any) -> str:
    """JSON as the ``camera_ids`` and ``details`` columns hold it: compact, sorted, readable
    (Hangul stays Hangul). Hashing decodes it and re-encodes canonically."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def _row(payload: Mapping[str, Any], record_hash: str) -> tuple[Any, ...]:
    values = dict(payload)
    values["camera_ids"] = _stored_json(values["camera_ids"])
    values["details"] = _stored_json(values["details"])
    values["hash"] = record_hash
    return tuple(values[column] for column in _RECORD_COLUMNS)


def _payload_from_row(row: sqlite3.Row) -> dict[str, Any]:
    """The canonical payload as stored (no validation beyond JSON decoding); ValueError if not."""
    payload = {column: row[column] for column in _RECORD_COLUMNS if column != "hash"}
    for column in ("camera_ids", "details"):
        if not isinstance(payload[column], str):
            raise ValueError(f"{column} is not JSON text")
        payload[column] = json.loads(payload[column])
    return payload


def _record_from_row(row: sqlite3.Row) -> AuditRecord:
    seq = int(row["seq"])
    try:
        payload = _payload_from_row(row)
        entry = AuditEntry(
            action=payload["action"],
            operator_id=payload["operator_id"],
            agency=payload["agency"],
            source_address=payload["source_address"],
            camera_ids=tuple(payload["camera_ids"]),
            incident_id=payload["incident_id"],
            purpose=payload["purpose"],
            legal_basis=payload["legal_basis"],
            outcome=payload["outcome"],
            reason=payload["reason"],
            period_start=_parse_optional_time(payload["period_start"]),
            period_end=_parse_optional_time(payload["period_end"]),
            details=payload["details"],
        )
        return AuditRecord(seq=seq, at=_parse_time(payload["at"]), prev_hash=str(row["prev_hash"]),
                           hash=str(row["hash"]), entry=entry)
    except (ValueError, TypeError) as exc:
        raise AuditChainBroken(seq, f"unreadable record ({exc})") from exc


def _checkpoint_message(seq: int, head_hash: str, at: datetime, key_id: str) -> bytes:
    return _canonical_json(
        {"kind": CHECKPOINT_KIND, "seq": seq, "head_hash": head_hash, "at": _iso(at),
         "key_id": key_id}
    ).encode("ascii")


def _raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _iso(value: datetime | None) -> str | None:
    """ISO-8601 in UTC with microseconds: fixed width, so text order is time order."""
    return None if value is None else value.astimezone(UTC).isoformat(timespec="microseconds")


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"time {text!r} has no timezone")
    return value.astimezone(UTC)


def _parse_optional_time(text: str | None) -> datetime | None:
    return None if text is None else _parse_time(text)


# Validation -------------------------------------------------------------------------------------


def _parse_enum(enum_type: type[_E], value: object, what: str) -> _E:
    try:
        return enum_type(value)
    except ValueError:
        choices = ", ".join(member.value for member in enum_type)
        raise ValueError(f"unknown {what} {value!r}; expected one of: {choices}") from None


def _check_text(name: str, value: object, *, required: bool) -> None:
    if value is None:
        if required:
            raise ValueError(f"{name} is required")
        return
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, not {type(value).__name__}")
    if required and not value:
        raise ValueError(f"{name} must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} is not valid Unicode text") from None


def _check_camera_ids(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"camera_ids must be a sequence of camera ids, not {type(value).__name__}")
    camera_ids = tuple(value)
    for camera_id in camera_ids:
        _check_text("a camera id", camera_id, required=True)
    return camera_ids


def _check_time(name: str, value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ValueError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC); got naive {value.isoformat()}")
    return value.astimezone(UTC)


def _check_details(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"details must be a mapping, not {type(value).__name__}")
    try:
        text = _stored_json(dict(value))
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"details must be plain JSON text: {exc}") from None
    if size > MAX_DETAILS_BYTES:
        raise ValueError(f"details take {size} bytes as JSON; at most {MAX_DETAILS_BYTES}")
    details: dict[str, Any] = json.loads(text)
    return details
