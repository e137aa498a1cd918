"""Who is asking: an authenticated operator and the address the call came from."""

from __future__ import annotations

from dataclasses import dataclass

from cloud_core.policy import Operator


@dataclass(frozen=True)
class Caller:
    """An authenticated operator and where the call came from (for the record)."""

    operator: Operator
    source_address: str = ""
