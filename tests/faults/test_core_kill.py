"""The core process SIGKILLed mid-write, again and again on the same files: after every kill
the audit chain verifies and every record whose call was acknowledged is in it.

``tests/integration/test_core_crash.py`` kills a fresh core once; this one restarts it on the
chain a kill left behind, so the chain is extended from a torn tail too."""

from __future__ import annotations

from pathlib import Path

from tests.faults.scenarios import core_kill_cycles


async def test_repeated_core_kills_leave_a_verifiable_chain_with_every_ack(tmp_path: Path) -> None:
    figures = await core_kill_cycles(tmp_path, cycles=3, records_per_cycle=40)
    assert figures["kills"] == 3
    assert figures["audit_records"] >= figures["acknowledged_records"] >= 120
