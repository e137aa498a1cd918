"""Databases and state files that only their owner may read: created 0600, tightened if not.

SQLite creates a database with the process's umask (0644 on most hosts) and gives its ``-wal``
and ``-shm`` files the main file's mode, so creating the main file 0600 first is enough.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

PRIVATE_MODE = 0o600


def make_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if missing; drop group and other bits if present.

    Files SQLite made beside it (``-wal``, ``-shm``, ``-journal``) are tightened too.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
    for candidate in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
        try:
            mode = stat.S_IMODE(candidate.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(candidate, mode & 0o700)
