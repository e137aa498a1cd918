"""Taking an agent's local journal into the core's audit chain (docs/local-mode.md).

While the core was down, a district's agent decided its own operators' views and journaled each
decision in a hash chain of its own. When the core sees the agent again (its ``online`` status,
or a heartbeat whose ``journal_seq`` is ahead of what the chain holds) it **pulls**: it asks for
the entries after the last one on its chain (``JournalFetch.after_seq``/``after_hash``), checks the
whole batch — district, consecutive seqs, each previous hash, each entry's own hash, known actions
— and only then appends the entries, in order, as audit records that carry the journal's seq and
hash in ``details.journal``. The chain itself is where the core remembers how far it got
(``audit.journal_head``), so a crash between two appends neither loses nor repeats an entry. A
batch that fails any check is refused whole: nothing of it is stored, the refusal is on the
chain (``journal.intake``, denied, naming the entry and the problem) and the agent keeps it all.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

import structlog

from cloud_core import audit as audit_log
from cloud_core.audit import AuditAction, AuditEntry, AuditLog, AuditOutcome
from cloud_core.exceptions import AgentUnavailable, CoreError
from cloud_core.policy import Policy, district_agency
from cloud_core.signalling import SignallingTransport
from protos.safetynet.v1 import mqtt_pb2
from runtime.background import BackgroundTasks
from runtime.journal_chain import GENESIS, JournalRecord, link_problem

log = structlog.get_logger(__name__)

BATCH = 200
SYSTEM_OPERATOR = "system:journal-intake"
_ACTIONS = {a.value: a for a in audit_log.JOURNAL_ACTIONS}
_OUTCOMES = {"ok": AuditOutcome.OK, "denied": AuditOutcome.DENIED}


class JournalRejected(CoreError):
    """A journal batch failed a check; ``seq`` names the first bad entry."""

    def __init__(self, district_id: str, seq: int, problem: str) -> None:
        super().__init__(f"journal of district {district_id!r} refused at entry {seq}: {problem}")
        self.district_id = district_id
        self.seq = seq
        self.problem = problem


class JournalIntake:
    """Pulls each district's local journal onto the chain; owns one pull task per district."""

    def __init__(self, relay: SignallingTransport, audit: AuditLog, policy: Policy, *,
                 timeout: float) -> None:
        self._relay = relay
        self._audit = audit
        self._policy = policy
        self._timeout = timeout
        self._heads: dict[str, tuple[int, str]] = {}
        self._pulling: set[str] = set()
        self._again: set[str] = set()
        self._refused: dict[str, str] = {}  # district -> last refusal recorded (not repeated)
        self._tasks = BackgroundTasks("journal-intake")

    async def __aenter__(self) -> Self:
        await self._tasks.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._tasks.close()

    def nudge(self, district_id: str, agent_seq: int | None = None) -> asyncio.Task[None] | None:
        """The agent is there (``agent_seq``: its journal's head, when known): pull if behind.

        Returns the pull task it started (None when none was needed or one already runs, which
        then pulls once more).
        """
        head = self._heads.get(district_id)
        if agent_seq is not None and (agent_seq == 0 or (head is not None and agent_seq <= head[0])):
            return None
        if district_id in self._pulling:
            self._again.add(district_id)
            return None
        self._pulling.add(district_id)
        return self._tasks.start(self._pull_task(district_id), name=f"journal-pull:{district_id}")

    async def _pull_task(self, district_id: str) -> None:
        try:
            while True:
                self._again.discard(district_id)
                try:
                    await self.pull(district_id)
                except AgentUnavailable as exc:
                    log.info("journal pull postponed", district=district_id, why=exc.why)
                except JournalRejected as exc:
                    await self._record_refusal(exc)
                if district_id not in self._again:
                    return
        finally:
            self._pulling.discard(district_id)

    async def head(self, district_id: str) -> tuple[int, str]:
        """(seq, hash) of the district's last journal entry on the chain; (0, GENESIS) if none."""
        if district_id not in self._heads:
            found = await asyncio.to_thread(audit_log.journal_head, self._audit.db_path, district_id)
            self._heads[district_id] = found or (0, GENESIS)
        return self._heads[district_id]

    async def pull(self, district_id: str) -> int:
        """Take in every entry the agent has that the chain lacks; return how many were added."""
        added = 0
        while True:
            after_seq, after_hash = await self.head(district_id)
            request = mqtt_pb2.SignalRequest(journal_fetch=mqtt_pb2.JournalFetch(
                after_seq=after_seq, after_hash="" if after_seq == 0 else after_hash, limit=BATCH))
            response = await self._relay.request(district_id, request, self._timeout)
            if response.WhichOneof("result") != "journal":
                raise AgentUnavailable(district_id, "the agent keeps no local journal")
            records = self.check(district_id, response.journal, after_seq, after_hash)
            if not records:
                return added
            for record in records:
                await self._audit.append(self._entry(record))
                self._heads[district_id] = (record.seq, record.hash)
            added += len(records)
            self._refused.pop(district_id, None)
            log.info("journal taken in", district=district_id, entries=len(records),
                     through=records[-1].seq)

    def check(self, district_id: str, batch: mqtt_pb2.JournalBatch, after_seq: int,
              after_hash: str) -> list[JournalRecord]:
        """The batch as records, every check passed; JournalRejected at the first that fails."""
        records: list[JournalRecord] = []
        for entry in batch.entries:
            try:
                record = JournalRecord.from_proto(entry)
            except ValueError as exc:
                raise JournalRejected(district_id, entry.seq, str(exc)) from exc
            problem = link_problem(record, after_seq, after_hash) or _content_problem(
                district_id, record)
            if problem is not None:
                raise JournalRejected(district_id, record.seq, problem)
            records.append(record)
            after_seq, after_hash = record.seq, record.hash
        return records

    def _entry(self, record: JournalRecord) -> AuditEntry:
        at = datetime.fromisoformat(record.at)
        duration = record.details.get("duration_seconds")
        start = at - timedelta(seconds=float(duration)) if isinstance(duration, int | float) else at
        source = record.details.get("source")
        is_view = record.action == AuditAction.LOCAL_VIEW.value
        return AuditEntry(
            action=_ACTIONS[record.action], operator_id=record.operator_id,
            agency=district_agency(record.district_id),
            source_address=source if isinstance(source, str) and source else None,
            camera_ids=(record.camera_id,) if record.camera_id else (),
            purpose=str(record.details.get("purpose")) if is_view else None,
            legal_basis=self._policy.standing.legal_basis if is_view else None,
            outcome=_OUTCOMES[record.outcome], reason=record.reason or None,
            period_start=start, period_end=at,
            details={**record.details, "session_id": record.session_id,
                     "journal": {"district": record.district_id, "seq": record.seq,
                                 "hash": record.hash, "prev_hash": record.prev_hash,
                                 "at": record.at}})

    async def _record_refusal(self, exc: JournalRejected) -> None:
        log.error("journal refused", district=exc.district_id, seq=exc.seq, problem=exc.problem)
        if self._refused.get(exc.district_id) == str(exc):
            return  # the same batch again (next heartbeat): on the chain once is enough
        self._refused[exc.district_id] = str(exc)
        await self._audit.append(AuditEntry(
            action=AuditAction.JOURNAL_INTAKE, operator_id=SYSTEM_OPERATOR,
            agency=district_agency(exc.district_id), outcome=AuditOutcome.DENIED,
            reason=str(exc), details={"district": exc.district_id, "seq": exc.seq}))


def _content_problem(district_id: str, record: JournalRecord) -> str | None:
    if record.district_id != district_id:
        return f"entry names district {record.district_id!r}, but came from {district_id!r}'s agent"
    if record.action not in _ACTIONS:
        return f"unknown action {record.action!r}"
    if record.outcome not in _OUTCOMES:
        return f"unknown outcome {record.outcome!r}"
    if not record.operator_id:
        return "no operator"
    try:
        at = datetime.fromisoformat(record.at)
    except ValueError:
        return f"time {record.at!r} is not ISO 8601"
    if at.tzinfo is None or at.utcoffset() != timedelta(0):
        return f"time {record.at!r} is not UTC"
    if at > datetime.now(UTC) + timedelta(minutes=5):
        return f"time {record.at!r} is in the future"
    return None
