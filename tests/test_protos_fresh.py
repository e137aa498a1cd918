"""The committed generated code must match what protos/gen_protos.py produces now."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_protos", REPO / "protos" / "gen_protos.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    generator = _load_generator()
    fresh = {p.name: p.read_text() for p in generator.generate(tmp_path)}
    committed = {p.name: p.read_text() for p in (REPO / "protos/safetynet/v1").glob("*_pb2*.py*")}
    assert fresh, "protoc produced nothing"
    assert set(fresh) == set(committed), "a .proto was added or removed: run python protos/gen_protos.py"
    stale = sorted(name for name in fresh if fresh[name] != committed[name])
    assert not stale, f"stale generated code {stale}: run python protos/gen_protos.py"


def test_every_proto_has_generated_code() -> None:
    protos = {p.stem for p in (REPO / "protos/safetynet/v1").glob("*.proto")}
    generated = {p.name.removesuffix("_pb2.py") for p in (REPO / "protos/safetynet/v1").glob("*_pb2.py")}
    assert protos == generated
