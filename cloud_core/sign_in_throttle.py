"""Failed sign-ins, throttled and on the record, per source address and per operator.

Every bearer token is checked through ``AccessService.authenticate``. Failures are counted on
two keys: the source address, and the operator the token names (``snt_<operator id>.<secret>``,
``cloud_core.operators.claimed_operator``), so that a guesser spread over many addresses is
slowed down as much as one at a single address. After ``free_failures`` wrong tokens from one
source (``operator_free_failures`` against one operator, from any address) the key must wait
before it may try again: 1 s, then 2, 4, 8 … up to ``max_delay`` (exponential backoff). While a
key waits, every attempt on it is refused at once, before any token is looked up
(``SignInThrottled``: gRPC RESOURCE_EXHAUSTED, HTTP 429 with Retry-After). A success clears the
key's count.

A per-operator delay must not let an attacker lock the police out by failing on purpose in
the police operator's name (issue 12, finding 2 was exactly that kind of lock-out). So an
address the operator signed in from successfully in the last ``trust_seconds`` (at most
``trusted_sources`` of them per operator; OWASP's "device cookie", by address) is not held to
the operator's delay, only to its own.

Failures go on the audit record, rate-limited so a flood cannot flood the log: at most one
``auth.fail`` record per key per ``record_every`` seconds (carrying how many failures it stands
for), and at most ``max_records_per_minute`` in all; what is over the cap is counted in the next
record. The counters (``failures_total``, ``throttled_total``, by key kind) are the alert counts
on the core's ``/metrics`` (``safetynet_core_sign_in_failures_total``,
``safetynet_core_sign_in_throttled_total``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from cloud_core.audit import AuditAction, AuditEntry, AuditOutcome
from cloud_core.exceptions import SignInThrottled

MAX_TRACKED: Final = 100_000
"""Keys of each kind remembered; beyond it the least recently seen tenth is forgotten."""

KeyKind = Literal["source", "operator"]


@dataclass(slots=True)
class _Key:
    failures: int = 0
    locked_until: float = 0.0
    unrecorded: int = 0
    last_recorded: float = float("-inf")
    last_seen: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ThrottleSettings:
    free_failures: int = 5
    operator_free_failures: int = 10
    base_delay: float = 1.0
    max_delay: float = 300.0
    record_every: float = 60.0
    max_records_per_minute: int = 60
    trusted_sources: int = 16
    trust_seconds: float = 30 * 24 * 3600.0


def source_key(peer: str) -> str:
    """The address part of a gRPC peer (``ipv4:1.2.3.4:5678``) or an HTTP remote, port-less."""
    if peer.startswith("ipv4:"):
        return peer[5:].rsplit(":", 1)[0]
    if peer.startswith("ipv6:"):
        return peer[5:].rsplit(":", 1)[0].strip("[]")
    return peer.removeprefix("unix:") or "unknown"


@dataclass
class SignInThrottle:
    """Per-source and per-operator failure counts, delays and their audit entries."""

    settings: ThrottleSettings = field(default_factory=ThrottleSettings)
    clock: Callable[[], float] = time.monotonic
    failures: Counter[str] = field(default_factory=Counter)
    throttled: Counter[str] = field(default_factory=Counter)
    _keys: dict[KeyKind, dict[str, _Key]] = field(
        default_factory=lambda: {"source": {}, "operator": {}})
    _trusted: dict[str, dict[str, float]] = field(default_factory=dict)
    _recorded: list[float] = field(default_factory=list)

    @property
    def failures_total(self) -> int:
        """Wrong tokens seen (each counts once, whatever keys it was counted on)."""
        return self.failures["source"]

    @property
    def throttled_total(self) -> int:
        """Attempts refused while a key waited."""
        return self.throttled["source"] + self.throttled["operator"]

    def check(self, source: str, operator: str | None = None) -> None:
        """SignInThrottled while ``source`` must wait, or ``operator`` does and ``source`` is
        not one it signed in from."""
        now = self.clock()
        self._refuse_if_waiting("source", source, now)
        if operator is not None and not self._is_trusted(operator, source, now):
            self._refuse_if_waiting("operator", operator, now)

    def failed(self, source: str, operator: str | None = None) -> None:
        """One more wrong token from ``source`` (naming ``operator``); the next may wait."""
        now = self.clock()
        self._fail("source", source, now, self.settings.free_failures)
        if operator is not None:
            self._fail("operator", operator, now, self.settings.operator_free_failures)

    def succeeded(self, source: str, operator: str | None = None) -> None:
        """A right token: clear both counts, and trust ``source`` for ``operator`` from now."""
        entries = [self._keys["source"].get(source)]
        if operator is not None:
            entries.append(self._keys["operator"].get(operator))
            self._trust(operator, source, self.clock())
        for entry in entries:
            if entry is not None:
                entry.failures = 0
                entry.locked_until = 0.0

    def due_records(self) -> list[AuditEntry]:
        """The ``auth.fail`` entries to write now (the sweeper writes them every second)."""
        now = self.clock()
        self._recorded = [t for t in self._recorded if now - t < 60.0]
        entries: list[AuditEntry] = []
        for kind, keys in self._keys.items():
            for key, entry in keys.items():
                if entry.unrecorded == 0 or now - entry.last_recorded < self.settings.record_every:
                    continue
                if len(self._recorded) >= self.settings.max_records_per_minute:
                    return entries
                entries.append(self._record(kind, key, entry, now))
                entry.unrecorded = 0
                entry.last_recorded = now
                self._recorded.append(now)
        return entries

    # --- the keys -----------------------------------------------------------------------------

    def _refuse_if_waiting(self, kind: KeyKind, key: str, now: float) -> None:
        entry = self._keys[kind].get(key)
        if entry is not None and entry.locked_until > now:
            self.throttled[kind] += 1
            entry.unrecorded += 1
            raise SignInThrottled(entry.locked_until - now,
                                  per="address" if kind == "source" else "operator")

    def _fail(self, kind: KeyKind, key: str, now: float, free: int) -> None:
        keys = self._keys[kind]
        if key not in keys and len(keys) >= MAX_TRACKED:
            _forget_oldest(keys)
        entry = keys.setdefault(key, _Key())
        entry.failures += 1
        entry.unrecorded += 1
        entry.last_seen = now
        self.failures[kind] += 1
        over = entry.failures - free + 1
        if over > 0:
            delay = min(self.settings.base_delay * 2 ** min(over - 1, 64), self.settings.max_delay)
            entry.locked_until = now + delay

    def _is_trusted(self, operator: str, source: str, now: float) -> bool:
        seen = self._trusted.get(operator, {}).get(source)
        return seen is not None and now - seen < self.settings.trust_seconds

    def _trust(self, operator: str, source: str, now: float) -> None:
        if operator not in self._trusted and len(self._trusted) >= MAX_TRACKED:
            del self._trusted[next(iter(self._trusted))]
        sources = self._trusted.setdefault(operator, {})
        sources.pop(source, None)
        sources[source] = now
        while len(sources) > self.settings.trusted_sources:
            del sources[next(iter(sources))]  # the least recently trusted

    @staticmethod
    def _record(kind: KeyKind, key: str, entry: _Key, now: float) -> AuditEntry:
        details = {"key": kind, "failures": entry.unrecorded, "consecutive": entry.failures,
                   "locked_seconds": round(max(0.0, entry.locked_until - now), 1)}
        if kind == "operator":
            return AuditEntry(
                action=AuditAction.AUTH_FAIL, operator_id=key, outcome=AuditOutcome.DENIED,
                reason="invalid or disabled token naming this operator (any address)",
                details=details)
        return AuditEntry(
            action=AuditAction.AUTH_FAIL, operator_id="unknown", source_address=key[:256],
            outcome=AuditOutcome.DENIED, reason="invalid or disabled operator token",
            details=details)


def _forget_oldest(keys: dict[str, _Key]) -> None:
    oldest = sorted(keys, key=lambda k: keys[k].last_seen)
    for key in oldest[: len(oldest) // 10 or 1]:
        del keys[key]
