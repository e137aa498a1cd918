"""Dependencies point one way: contract <- shared runtime <- the parts <- the CLI and demo.

    protos/        the contract: imports nothing of ours
    runtime/       the shared runtime layer: protos only
    edge_agent/ cloud_core/ viewer/ simulators/ provisioning/
                   runtime and protos; never one another
    safetynet/     the CLI and the demo: anything

The rule is read from each module's own imports (``ast``, nothing is imported to check it), so a
function-local import counts as much as a top-level one. docs/architecture.md explains the layers.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
OURS = ("protos", "runtime", "edge_agent", "cloud_core", "viewer", "simulators", "provisioning",
        "safetynet")
PARTS = ("edge_agent", "cloud_core", "viewer", "simulators", "provisioning")
ALLOWED: dict[str, frozenset[str]] = {
    "protos": frozenset(),
    "runtime": frozenset({"protos"}),
    **{part: frozenset({"protos", "runtime"}) for part in PARTS},
    "safetynet": frozenset(OURS),
}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level package of ours, line) for every absolute import in the file at ``path``."""
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update((name.split(".")[0], node.lineno) for name in names
                     if name.split(".")[0] in OURS)
    return found


def layer_violations(package: str) -> list[str]:
    problems = []
    for path in sorted((REPO / package).rglob("*.py")):
        if "_pb2" in path.name:
            continue
        for imported, line in sorted(imported_packages(path)):
            if imported != package and imported not in ALLOWED[package]:
                problems.append(f"{path.relative_to(REPO)}:{line} imports {imported}")
    return problems


@pytest.mark.parametrize("package", OURS)
def test_package_imports_only_the_layers_below(package: str) -> None:
    assert layer_violations(package) == []


def test_checker_sees_a_violation(tmp_path: Path) -> None:
    module = tmp_path / "probe.py"
    module.write_text("import os\nfrom cloud_core.audit import AuditLog\n"
                      "def f():\n    import edge_agent.agent\n")
    assert imported_packages(module) == {("cloud_core", 2), ("edge_agent", 4)}


def test_the_agent_loads_no_opencv_or_numpy() -> None:
    """A production agent (RTSP cameras) must not pay for the simulated camera's OpenCV."""
    probe = ("import sys, edge_agent.agent, edge_agent.camera_sources; "
             "print(sorted(m for m in ('cv2', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
