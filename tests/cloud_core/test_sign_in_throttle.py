"""Failed sign-ins throttled per source address and per operator, on a clock the test moves."""

from __future__ import annotations

import pytest

from cloud_core.audit import AuditAction
from cloud_core.exceptions import SignInThrottled
from cloud_core.operators import claimed_operator
from cloud_core.sign_in_throttle import SignInThrottle, ThrottleSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _throttle(clock: Clock, **settings: float) -> SignInThrottle:
    return SignInThrottle(ThrottleSettings(**settings), clock)  # type: ignore[arg-type]


def test_tokens_name_the_operator_they_claim_to_be() -> None:
    assert claimed_operator("snt_police-op.abcDEF_-123") == "police-op"
    assert claimed_operator("snt_kim.lee.abc") == "kim.lee"
    for token in ("snt_abcdef", "snt_.abc", "snt_police-op.", "police-op.abc", "snt_BAD ID.abc",
                  "snt_" + "x" * 64 + ".abc", ""):
        assert claimed_operator(token) is None, token


def test_failures_against_one_operator_from_many_addresses_back_off_exponentially() -> None:
    clock = Clock()
    throttle = _throttle(clock, operator_free_failures=3)
    for n in range(3):                       # three addresses, one wrong token each
        throttle.check(f"10.0.0.{n}", "police-op")
        throttle.failed(f"10.0.0.{n}", "police-op")
    with pytest.raises(SignInThrottled) as waiting:
        throttle.check("10.0.0.99", "police-op")   # a fresh address: the operator waits
    assert waiting.value.retry_after == pytest.approx(1.0)
    throttle.check("10.0.0.99", "mapo-op")          # another operator is not held up
    delays = []
    for n in range(4):
        clock.now += 1000
        throttle.failed(f"10.1.0.{n}", "police-op")
        with pytest.raises(SignInThrottled) as waiting:
            throttle.check("10.2.0.1", "police-op")
        delays.append(waiting.value.retry_after)
    assert delays == pytest.approx([2.0, 4.0, 8.0, 16.0])
    assert throttle.failures == {"source": 7, "operator": 7}
    assert throttle.throttled["operator"] == 5


def test_an_address_the_operator_signed_in_from_is_not_locked_out_by_others() -> None:
    clock = Clock()
    throttle = _throttle(clock, operator_free_failures=2)
    throttle.succeeded("10.112.0.5", "police-op")    # the 112 room's console
    for n in range(20):                               # an attacker failing in police-op's name
        clock.now += 0.001
        try:
            throttle.check(f"198.51.100.{n}", "police-op")
        except SignInThrottled:
            continue
        throttle.failed(f"198.51.100.{n}", "police-op")
    throttle.check("10.112.0.5", "police-op")         # the room still signs in at once
    with pytest.raises(SignInThrottled):
        throttle.check("203.0.113.1", "police-op")
    throttle.succeeded("10.112.0.5", "police-op")     # a success clears the operator's count
    throttle.check("203.0.113.1", "police-op")


def test_a_source_still_waits_on_its_own_count() -> None:
    clock = Clock()
    throttle = _throttle(clock, free_failures=2)
    throttle.failed("10.0.0.1")
    throttle.failed("10.0.0.1")
    with pytest.raises(SignInThrottled):
        throttle.check("10.0.0.1", "police-op")
    clock.now += 1.01
    throttle.check("10.0.0.1", "police-op")


def test_failures_are_recorded_per_key_and_rate_limited() -> None:
    clock = Clock()
    throttle = _throttle(clock, operator_free_failures=3, max_records_per_minute=3)
    for n in range(50):
        throttle.failed(f"10.0.0.{n % 5}", "police-op")
    entries = throttle.due_records()
    assert len(entries) == 3 and all(e.action is AuditAction.AUTH_FAIL for e in entries)
    assert throttle.due_records() == []               # cap reached, and per key once a minute
    clock.now += 61
    rest = throttle.due_records()
    recorded = {e.details["key"]: e for e in [*entries, *rest]}
    operator = recorded["operator"]
    assert (operator.operator_id, operator.source_address) == ("police-op", None)
    assert operator.details["failures"] == 50
    sources = [e for e in [*entries, *rest] if e.details["key"] == "source"]
    assert sum(e.details["failures"] for e in sources) == 50
    assert {e.source_address for e in sources} == {f"10.0.0.{n}" for n in range(5)}
