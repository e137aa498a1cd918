"""The core's ``[storage]`` table: where the shared storage of several replicas lives.

    [storage]
    url = "postgresql://safetynet@db.city.example:5432/safetynet"

Without it the core keeps everything in SQLite files (the pilot). With it all of the core's
state (registry, sessions, incidents, operators, evidence), the audit chain and the leadership
are on PostgreSQL, shared by every replica; keep the password out of the file (``~/.pgpass``, or the
``PGPASSWORD``/``PGPASSFILE`` environment); a password in the URL works but is never logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cloud_core.storage.base import describe, is_postgres


@dataclass(frozen=True, slots=True)
class StorageSettings:
    url: str = field(repr=False)

    def __post_init__(self) -> None:
        if not is_postgres(self.url):
            raise ValueError("[storage] url must be a postgresql:// URL")

    def describe(self) -> str:
        """The URL without its password."""
        return describe(self.url)

    def __repr__(self) -> str:
        return f"StorageSettings(url={self.describe()!r})"

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> StorageSettings:
        unknown = set(data) - {"url"}
        if unknown:
            raise ValueError(f"unknown [storage] setting(s): {', '.join(sorted(unknown))}")
        url = data.get("url")
        if not isinstance(url, str):
            raise ValueError("[storage] url must be a postgresql:// URL")
        return cls(url=url)
