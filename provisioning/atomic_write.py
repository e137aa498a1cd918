"""Files written whole or not at all, with their permissions from the first byte.

A private key is created with mode 0600 by ``os.open`` (never chmod-ed afterwards, so it is never
readable by anyone else, not even for a moment); every file goes to a temporary sibling first and
is renamed into place, so a crash leaves the previous version, never half of a new one.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

PRIVATE = 0o600
PUBLIC = 0o644


def write_private(path: Path, data: bytes | str) -> None:
    """Write a secret (key, credentials-bearing inventory): mode 0600 from creation."""
    _write(path, data, PRIVATE)


def write_public(path: Path, data: bytes | str, mode: int = PUBLIC) -> None:
    """Write a non-secret file (certificate, config, ACL) atomically with ``mode``."""
    _write(path, data, mode)


def _write(path: Path, data: bytes | str, mode: int) -> None:
    raw = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            if mode != PRIVATE:
                os.fchmod(fd, mode)  # public files: the same mode whatever the umask
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
