"""Operators of the agencies and their bearer tokens.

A token is random (256 bits), shown once when the operator is created and stored only as its
SHA-256 hash: a stolen database holds no usable token. Authentication looks the hash up, so
every call sees a disabled operator at once.

A token names the operator it claims to be, ``snt_<operator id>.<secret>``, so that failed
sign-ins against one operator are counted and throttled whatever address they come from
(``cloud_core.sign_in_throttle``); the name is a claim, never a credential: only the whole
token's hash is looked up, and a token whose row names another operator is refused. Tokens of
the older form ``snt_<secret>`` still work (they are only throttled per address).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime

from cloud_core.exceptions import RegistryError, Unauthenticated
from cloud_core.policy import Operator, Policy, Role
from cloud_core.storage.database import Database, DatabaseError, IntegrityError
from protos.topics import check_id

TOKEN_PREFIX = "snt_"


def claimed_operator(token: str) -> str | None:
    """The operator id a token names (``snt_<id>.<secret>``), or None (older form, garbage)."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    operator_id, dot, secret = token[len(TOKEN_PREFIX):].rpartition(".")
    if not dot or not secret:
        return None
    try:
        return check_id(operator_id, "operator")
    except ValueError:
        return None

SCHEMA = """
CREATE TABLE IF NOT EXISTS operators (
    operator_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    agency TEXT NOT NULL,
    role TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    disabled_at TEXT
);
"""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


AUTH_CACHE_SECONDS = 1.0


class OperatorStore:
    """Operators in the core's database. ``authenticate`` remembers a token's operator for one second, so a
    burst of calls costs one lookup, and a disabled operator is refused within that second (by
    every replica: each asks the shared database once its second is up). ``clock`` is
    monotonic seconds."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self._db.schema(SCHEMA)
        self._clock = clock
        self._cache: dict[str, tuple[float, Operator | None]] = {}

    def add(self, operator_id: str, *, agency: str, role: str, policy: Policy,
            name: str | None = None) -> tuple[Operator, str]:
        """Create an operator; return it and its token (the only time the token exists in clear)."""
        check_id(operator_id, "operator name")
        if not (policy.is_known_agency(agency)):
            known = ", ".join(sorted(policy.agencies)) + ", district:<district id>"
            raise ValueError(f"unknown agency {agency!r}; agencies are: {known}")
        operator = Operator(operator_id, name or operator_id, agency, Role(role))
        token = f"{TOKEN_PREFIX}{operator.operator_id}.{secrets.token_urlsafe(32)}"
        try:
            self._db.execute(
                "INSERT INTO operators (operator_id, name, agency, role, enabled, token_hash, created_at) "
                "VALUES (?, ?, ?, ?, 1, ?, ?)",
                [operator.operator_id, operator.name, operator.agency, operator.role.value,
                 token_hash(token), datetime.now(UTC).isoformat()],
            )
        except IntegrityError as exc:
            raise ValueError(f"operator {operator_id!r} already exists") from exc
        except DatabaseError as exc:
            raise RegistryError(f"cannot store operator: {exc}") from exc
        return operator, token

    def disable(self, operator_id: str) -> Operator:
        self._cache.clear()
        cursor = self._db.execute(
            "UPDATE operators SET enabled=0, disabled_at=? WHERE operator_id=? AND enabled=1",
            [datetime.now(UTC).isoformat(), operator_id])
        operator = self.get(operator_id)
        if operator is None:
            raise ValueError(f"no operator {operator_id!r}")
        if cursor.rowcount == 0:
            raise ValueError(f"operator {operator_id!r} is already disabled")
        return operator

    def get(self, operator_id: str) -> Operator | None:
        row = self._db.execute(
            "SELECT operator_id, name, agency, role, enabled FROM operators WHERE operator_id=?",
            [operator_id]).fetchone()
        return _operator(row) if row else None

    def list_all(self) -> list[Operator]:
        rows = self._db.execute(
            "SELECT operator_id, name, agency, role, enabled FROM operators ORDER BY operator_id"
        ).fetchall()
        return [_operator(r) for r in rows]

    def disabled_ids(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT operator_id FROM operators WHERE enabled=0")}

    def authenticate(self, token: str) -> Operator:
        """The enabled operator holding ``token``; Unauthenticated otherwise (never says which)."""
        if not token:
            raise Unauthenticated("missing bearer token: send 'authorization: Bearer <token>'")
        now = self._clock()
        cached = self._cache.get(token)
        if cached is not None and cached[0] > now:
            operator = cached[1]
        else:
            row = self._db.execute(
                "SELECT operator_id, name, agency, role, enabled FROM operators WHERE token_hash=?",
                [token_hash(token)]).fetchone()
            operator = _operator(row) if row is not None and row[4] else None
            claimed = claimed_operator(token)
            if operator is not None and claimed not in (None, operator.operator_id):
                operator = None  # a token naming someone else is not this operator's
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = (now + AUTH_CACHE_SECONDS, operator)
        if operator is None:
            raise Unauthenticated("invalid or disabled operator token")
        return operator


def _operator(row: tuple[object, ...]) -> Operator:
    return Operator(str(row[0]), str(row[1]), str(row[2]), Role(str(row[3])), bool(row[4]))
