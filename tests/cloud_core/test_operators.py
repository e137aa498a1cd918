"""The operator store on each backend: tokens stored as hashes, disabling, the one-second cache."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cloud_core.exceptions import Unauthenticated
from cloud_core.operators import AUTH_CACHE_SECONDS, OperatorStore, token_hash
from cloud_core.policy import Policy, Role
from cloud_core.storage.base import Location
from cloud_core.storage.database import Database, open_database


class Clock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(core_database: Location) -> Iterator[Database]:
    database = open_database(core_database)
    yield database
    database.close()


def test_an_operator_signs_in_with_the_token_shown_once(db: Database) -> None:
    store = OperatorStore(db)
    operator, token = store.add("police-op", agency="police-112", role="operator",
                                policy=Policy.default(), name="Officer Kim")
    assert store.authenticate(token) == operator
    assert (operator.name, operator.role, operator.enabled) == ("Officer Kim", Role.OPERATOR, True)
    stored = db.execute("SELECT token_hash FROM operators").fetchall()
    assert stored == [(token_hash(token),)], "only the token's hash is kept"
    with pytest.raises(Unauthenticated):
        store.authenticate(token + "x")
    with pytest.raises(ValueError, match="already exists"):
        store.add("police-op", agency="police-112", role="operator", policy=Policy.default())
    with pytest.raises(ValueError, match="unknown agency"):
        store.add("nobody", agency="nowhere", role="operator", policy=Policy.default())


def test_a_disabled_operator_is_refused_and_listed(db: Database) -> None:
    store = OperatorStore(db)
    policy = Policy.default()
    _, token = store.add("police-op", agency="police-112", role="operator", policy=policy)
    store.add("fire-op", agency="fire-119", role="operator", policy=policy)
    store.authenticate(token)
    disabled = store.disable("police-op")
    assert not disabled.enabled
    with pytest.raises(Unauthenticated, match="invalid or disabled"):
        store.authenticate(token)
    with pytest.raises(ValueError, match="already disabled"):
        store.disable("police-op")
    with pytest.raises(ValueError, match="no operator"):
        store.disable("nobody")
    assert store.disabled_ids() == {"police-op"}
    assert [(o.operator_id, o.enabled) for o in store.list_all()] == [
        ("fire-op", True), ("police-op", False)]
    assert store.get("nobody") is None


def test_a_token_naming_another_operator_is_refused(db: Database) -> None:
    store = OperatorStore(db)
    _, token = store.add("police-op", agency="police-112", role="operator",
                         policy=Policy.default())
    secret = token.rpartition(".")[2]
    forged = f"snt_fire-op.{secret}"
    db.execute("UPDATE operators SET token_hash=? WHERE operator_id=?",
               [token_hash(forged), "police-op"])
    with pytest.raises(Unauthenticated):
        store.authenticate(forged)


def test_two_replicas_share_operators_and_a_disable_reaches_the_other_within_the_cache(
    pg_dsn: str,
) -> None:
    """Two cores on one PostgreSQL: an operator created on A signs in on B; disabled on A, B
    refuses it as soon as B's one-second cache of the token is up."""
    clock = Clock()
    a_db, b_db = open_database(pg_dsn), open_database(pg_dsn)
    try:
        a, b = OperatorStore(a_db, clock=clock), OperatorStore(b_db, clock=clock)
        _, token = a.add("police-op", agency="police-112", role="operator",
                         policy=Policy.default())
        assert b.authenticate(token).operator_id == "police-op"
        a.disable("police-op")
        with pytest.raises(Unauthenticated):
            a.authenticate(token)
        assert b.authenticate(token).enabled, "within its second B may still use the cache"
        clock.now += AUTH_CACHE_SECONDS
        with pytest.raises(Unauthenticated, match="invalid or disabled"):
            b.authenticate(token)
        assert b.disabled_ids() == {"police-op"}
    finally:
        a_db.close()
        b_db.close()
