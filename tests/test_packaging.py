"""The installed package carries every top-level package of ours (not only the repository)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.test_layers import OURS


def test_every_package_imports_outside_the_repository(tmp_path: Path) -> None:
    # From another folder, only what the installed distribution ships can be imported.
    probe = "import importlib, sys; [importlib.import_module(p) for p in sys.argv[1:]]"
    result = subprocess.run([sys.executable, "-c", probe, *OURS], cwd=tmp_path,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
