"""PostgreSQL connection strings: connecting with a deadline, and naming one without its password.

A wrong password or an unreachable server is a clear ``DatabaseUnavailable`` within
``connect_timeout`` seconds, never a hang; the password never reaches a log line or an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from cloud_core.exceptions import DatabaseUnavailable

if TYPE_CHECKING:
    import psycopg

CONNECT_TIMEOUT_S: Final = 5
# A leader's connection must notice a dead peer in seconds, not the kernel's two hours.
KEEPALIVES: Final = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
                     "keepalives_count": 2}


def redact(dsn: str) -> str:
    """``dsn`` as ``postgresql://user@host:port/dbname``: no password, no other secrets."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:  # never echo a malformed DSN: it may hold a password
        return "postgresql://(malformed connection string)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


def connection_kwargs(dsn: str, **extra: Any) -> dict[str, Any]:
    """Keyword arguments for ``psycopg.connect``: the DSN's own, a connect timeout unless set."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    params: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S, **KEEPALIVES}
    try:
        params.update(conninfo_to_dict(dsn))
    except psycopg.ProgrammingError as exc:  # its text may echo the DSN, password and all
        raise DatabaseUnavailable(redact(dsn), "not a valid PostgreSQL connection string") from exc
    params.update(extra)
    return params


def connect(dsn: str, **extra: Any) -> psycopg.Connection[Any]:
    """A connection to ``dsn`` (``DatabaseUnavailable`` naming the cause, within the timeout)."""
    import psycopg

    try:
        return psycopg.connect(**connection_kwargs(dsn, **extra))
    except psycopg.Error as exc:
        raise DatabaseUnavailable(redact(dsn), first_line(exc)) from exc


async def connect_async(dsn: str, **extra: Any) -> psycopg.AsyncConnection[Any]:
    """``connect`` for the event loop."""
    import psycopg

    try:
        return await psycopg.AsyncConnection.connect(**connection_kwargs(dsn, **extra))
    except psycopg.Error as exc:
        raise DatabaseUnavailable(redact(dsn), first_line(exc)) from exc


def first_line(exc: BaseException) -> str:
    """The server's message without libpq's multi-line decoration."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__
