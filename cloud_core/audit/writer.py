"""The audit log's writers: ``AuditLog`` for the core's event loop, ``append_sync`` for the CLI.

``AuditLog`` reaches thousands of appends per second with group commit: one writer thread takes
every pending entry, writes them in one ``BEGIN IMMEDIATE`` transaction and commits once, and
signs a checkpoint every N records, every T seconds while records are unattested, and on close.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cloud_core.audit.checkpoints import Checkpoint, CheckpointSigner
from cloud_core.audit.query import search
from cloud_core.audit.records import AuditAction, AuditEntry, AuditRecord
from cloud_core.exceptions import AuditError
from cloud_core.storage.base import (
    AuditWriteStore,
    Location,
    describe,
    normalise,
    open_audit_store,
)

logger = structlog.get_logger(__name__)

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditLogConfig:
    """How often ``AuditLog`` signs checkpoints and how much it lets callers queue.

    ``checkpoint_every`` records or ``checkpoint_interval`` seconds after the first unattested
    record, whichever comes first; always on close. ``max_pending`` bounds the queue: when it is
    full, ``append`` waits (an audit record is never dropped). ``max_batch`` bounds one commit.
    """

    checkpoint_every: int = 1000
    checkpoint_interval: float = 2.0
    max_pending: int = 10_000
    max_batch: int = 1000

    def __post_init__(self) -> None:
        for name in ("checkpoint_every", "max_pending", "max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not self.checkpoint_interval > 0:
            raise ValueError("checkpoint_interval must be positive")



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
        db_path: Location,
        *,
        signer: CheckpointSigner | None = None,
        config: AuditLogConfig | None = None,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
        may_checkpoint: Callable[[], bool] | None = None,
    ) -> None:
        self._db_path = normalise(db_path)
        self._signer = signer
        self._config = config or AuditLogConfig()
        self._on_checkpoint = on_checkpoint
        self._may_checkpoint = may_checkpoint
        self._state = AuditLogState.NEW
        self._log = logger.bind(db=describe(self._db_path))
        self._queue: asyncio.Queue[_Pending | object] = asyncio.Queue(self._config.max_pending + 1)
        self._slots = asyncio.Semaphore(self._config.max_pending)
        self._queue_full_logged = False
        self._executor: ThreadPoolExecutor | None = None
        self._store: AuditWriteStore | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._unattested = False
        self._last_checkpoint = time.monotonic()

    @classmethod
    def open(
        cls,
        db_path: Location,
        *,
        signer: CheckpointSigner | None = None,
        config: AuditLogConfig | None = None,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
        may_checkpoint: Callable[[], bool] | None = None,
    ) -> AuditLog:
        """A log on ``db_path``, opened by ``async with``. Without a signer, no checkpoints.

        ``on_checkpoint`` is called on the event loop with each checkpoint once it is committed:
        the place to publish checkpoints off-host, which is what makes deleting the newest
        records and their checkpoints together detectable. ``db_path`` may be a
        ``postgresql://`` URL (``cloud_core.storage``); there ``may_checkpoint`` says whether this
        replica signs checkpoints now (the leader's job).
        """
        return cls(db_path, signer=signer, config=config, on_checkpoint=on_checkpoint,
                   may_checkpoint=may_checkpoint)

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
    def db_path(self) -> Location:
        return self._db_path

    @property
    def public_key(self) -> Ed25519PublicKey | None:
        """The checkpoint key's public half (None without a signer): what ``verify`` trusts."""
        return None if self._signer is None else self._signer.public_key

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
                open_audit_store, self._db_path, self._signer, self._config.checkpoint_every,
                self._may_checkpoint,
            )
        except BaseException:
            self._executor.shutdown(wait=False)
            self._set_state(AuditLogState.CLOSED)
            self._closed.set()
            raise
        self._unattested = self._signer is not None and self._store.unattested
        self._last_checkpoint = time.monotonic()
        try:
            await self._attest_at_start()
        except BaseException:
            await self._in_thread(self._close_store)
            self._executor.shutdown(wait=False)
            self._set_state(AuditLogState.CLOSED)
            self._closed.set()
            raise
        self._writer = asyncio.create_task(self._run_writer(),
                                           name=f"audit-writer {describe(self._db_path)}")
        self._set_state(AuditLogState.OPEN)

    async def _attest_at_start(self) -> None:
        """Check the unsigned tail and sign it, or hand the last checkpoint to the witnesses.

        A tail that no longer chains (edited while the core was down) is refused: the core does
        not start on a log it would otherwise attest as good.
        """
        assert self._store is not None
        if self._signer is None:
            return
        if self._unattested:
            problem = await self._in_thread(self._store.tail_problem)
            if problem is not None:
                raise AuditError(f"the audit log's unsigned tail is broken: {problem}; run "
                                 "`safetynet audit verify` and investigate before starting")
            await self._checkpoint_in_thread()
            return
        last = await self._in_thread(self._store.last_checkpoint)
        if last is not None and self._on_checkpoint is not None:
            self._note_checkpoint(last)

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
            except Exception:  # noqa: BLE001 - a publisher's bug must not stop the audit writer
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
    db_path: Location, entry: AuditEntry, *, signer: CheckpointSigner | None = None
) -> AuditRecord:
    """Append one entry durably from code without an event loop (the CLI when the core is down).

    Safe while the core's ``AuditLog`` writes the same file: the head is read inside the write
    transaction. With a signer, a checkpoint covering the new record is signed before returning.
    """
    if not isinstance(entry, AuditEntry):
        raise TypeError(f"append_sync takes an AuditEntry, not {type(entry).__name__}")
    store = open_audit_store(normalise(db_path), signer, 1)
    try:
        records, checkpoint = store.write([entry], checkpoint_due=True)
        if checkpoint is not None:
            store.flush_wal()
    finally:
        store.close(final_checkpoint=False)
    return records[0]

