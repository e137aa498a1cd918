"""The core taking in an agent's local journal: in-memory signalling, a real LocalJournal at the
"agent" end and a real audit log. Forged, replayed or foreign entries are refused whole and
nothing is stored of them; the genuine journal still arrives whole afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from cloud_core import audit as audit_log
from cloud_core.audit import AuditAction, AuditLog, AuditOutcome
from cloud_core.journal_intake import JournalIntake, JournalRejected
from cloud_core.policy import Policy
from cloud_core.signalling import InMemorySignalling
from edge_agent.local_journal import LocalJournal
from protos.safetynet.v1 import mqtt_pb2
from runtime.journal_chain import JournalRecord

Tamper = Callable[[list[JournalRecord]], list[JournalRecord]]


@pytest.fixture
async def audit(tmp_path: Path) -> AsyncIterator[AuditLog]:
    async with AuditLog.open(tmp_path / "audit.sqlite3") as log:
        yield log


def journal_with_views(tmp_path: Path, views: int) -> LocalJournal:
    journal = LocalJournal(tmp_path / "journal.sqlite3", "gangnam")
    journal.append("local.sign_in", "kim", details={"source": "127.0.0.1", "role": "operator"})
    for n in range(views):
        journal.append("local.view", "kim", camera_id="gangnam-001", session_id=f"local-{n}",
                       details={"purpose": "district standing access, local mode"})
        journal.append("local.view_end", "kim", camera_id="gangnam-001", session_id=f"local-{n}",
                       details={"duration_seconds": 4.5, "bytes_sent": 1000})
    return journal


def agent(journal: LocalJournal, tamper: list[Tamper]) -> Callable[
        [mqtt_pb2.SignalRequest], object]:
    """An agent-side responder serving ``journal``; each tamper (in turn) alters one answer."""

    async def respond(request: mqtt_pb2.SignalRequest) -> mqtt_pb2.SignalResponse:
        fetch = request.journal_fetch
        await journal.confirm(fetch.after_seq)
        records = journal.after(fetch.after_seq, fetch.limit)
        if tamper:
            records = tamper.pop(0)(records)
        return mqtt_pb2.SignalResponse(request_id=request.request_id, journal=mqtt_pb2.JournalBatch(
            entries=[r.to_proto() for r in records], head_seq=journal.head_seq))

    return respond


def intake(relay: InMemorySignalling, audit: AuditLog) -> JournalIntake:
    return JournalIntake(relay, audit, Policy.default(), timeout=5.0)


async def journal_records(audit: AuditLog) -> list[audit_log.AuditRecord]:
    return [r for r in await audit.search(limit=1000) if "journal" in r.entry.details]


async def test_the_whole_journal_arrives_once_in_order_and_the_chain_verifies(
        tmp_path: Path, audit: AuditLog) -> None:
    journal = journal_with_views(tmp_path, views=3)
    relay = InMemorySignalling()
    relay.connect("gangnam", agent(journal, []))  # type: ignore[arg-type]
    assert await intake(relay, audit).pull("gangnam") == 7
    assert journal.confirmed_seq == 7
    assert await intake(relay, audit).pull("gangnam") == 0, "a new intake finds its place on the chain"
    records = sorted(await journal_records(audit), key=lambda r: r.seq)
    assert [r.entry.details["journal"]["seq"] for r in records] == list(range(1, 8))
    assert records[2].entry.action == AuditAction.LOCAL_VIEW_END
    assert (records[2].entry.period_end - records[2].entry.period_start).total_seconds() == 4.5
    assert audit_log.verify(audit.db_path).ok


def edit_operator(records: list[JournalRecord]) -> list[JournalRecord]:
    return [replace(r, operator_id="someone-else") if r.seq == 2 else r for r in records]


def reseal_as_mapo(records: list[JournalRecord]) -> list[JournalRecord]:
    return [replace(records[0], district_id="mapo").sealed(), *records[1:]]


def drop_second(records: list[JournalRecord]) -> list[JournalRecord]:
    return [r for r in records if r.seq != 2]


def invent_action(records: list[JournalRecord]) -> list[JournalRecord]:
    return [replace(records[0], action="local.evidence_export").sealed(), *records[1:]]


@pytest.mark.parametrize(("tamper", "seq", "problem"), [
    (edit_operator, 2, "does not match its content"),
    (reseal_as_mapo, 1, "names district 'mapo'"),
    (drop_second, 3, "gap or a replay"),
    (invent_action, 1, "unknown action"),
])
async def test_a_forged_batch_is_refused_whole_and_the_genuine_journal_still_arrives(
        tmp_path: Path, audit: AuditLog, tamper: Tamper, seq: int, problem: str) -> None:
    journal = journal_with_views(tmp_path, views=2)
    relay = InMemorySignalling()
    relay.connect("gangnam", agent(journal, [tamper]))  # type: ignore[arg-type]
    taker = intake(relay, audit)
    with pytest.raises(JournalRejected) as refused:
        await taker.pull("gangnam")
    assert refused.value.seq == seq and problem in refused.value.problem
    assert await journal_records(audit) == [], "nothing of a refused batch is stored"
    assert journal.confirmed_seq == 0 and journal.head_seq == 5, "the agent keeps everything"

    assert await taker.pull("gangnam") == 5
    assert audit_log.verify(audit.db_path).ok


async def test_a_refusal_is_on_the_chain_once(tmp_path: Path, audit: AuditLog) -> None:
    journal = journal_with_views(tmp_path, views=1)
    relay = InMemorySignalling()
    relay.connect("gangnam", agent(journal, [edit_operator, edit_operator]))  # type: ignore[arg-type]
    async with intake(relay, audit) as taker:
        for _ in range(2):
            pull = taker.nudge("gangnam", journal.head_seq)
            assert pull is not None
            await pull
    refusals = await audit.search(action=AuditAction.JOURNAL_INTAKE)
    assert len(refusals) == 1 and refusals[0].entry.outcome == AuditOutcome.DENIED
    assert "entry 2" in (refusals[0].entry.reason or "")
