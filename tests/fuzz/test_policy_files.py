"""Policy files (``cloud_core/policy/loader.py``), fuzzed: the shipped policy with keys dropped,
duplicated, moved or given values of every TOML type, random text, and bytes that are not UTF-8.

Reading never raises anything but ``PolicyError``, whose message names the file; an accepted
file is a policy the core can decide with; the shipped default is never changed by any of it.
"""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from cloud_core.exceptions import PolicyError
from cloud_core.policy import Policy, load_policy
from cloud_core.policy.loader import default_policy, parse_policy
from tests.fuzz.harness import NASTY_TEXT, counted, fuzz_settings, mutated_lines

SHIPPED = resources.files("cloud_core").joinpath("policy.toml").read_text(encoding="utf-8")
SOURCE = "fuzzed-policy.toml"
DEFAULT = default_policy()

TOML_VALUES = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats().map(lambda f: {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(str(f), repr(f))),
    st.booleans().map(lambda b: str(b).lower()),
    NASTY_TEXT.map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    NASTY_TEXT,
    st.sampled_from(["[]", "[1, \"a\"]", "{}", "{ x = 1 }", "1979-05-27T07:32:00Z", "07:32:00",
                     "[\"police-112\", \"police-112\"]", "[\"nobody\"]", "0", "-1", "99999999",
                     "\"\"", "\"robbery\"", "[services.x]", "[[agencies]]", "schema = 2"]),
)


def policies() -> st.SearchStrategy[str]:
    return st.one_of(mutated_lines([SHIPPED], TOML_VALUES), st.text(max_size=200))


def check_policy_text(text: str) -> None:
    counted("policy_file")
    try:
        policy = parse_policy(text, SOURCE)
    except PolicyError as exc:
        assert str(exc).startswith(f"{SOURCE}: ") and exc.problem.strip()
    else:
        assert isinstance(policy, Policy) and policy.services
    assert default_policy() is DEFAULT and default_policy() == Policy.default()


def check_policy_file(folder: Path, data: bytes) -> None:
    counted("policy_file_bytes")
    path = folder / "policy.toml"
    path.write_bytes(data)
    try:
        load_policy(path)
    except PolicyError as exc:
        assert exc.path == str(path) and exc.problem.strip()


@fuzz_settings(400)
@given(policies())
def test_any_policy_text_is_a_policy_or_a_policy_error_naming_the_file(text: str) -> None:
    check_policy_text(text)


@fuzz_settings(60)
@given(st.one_of(st.binary(max_size=200), policies().map(lambda t: t.encode() + b"\xc3\x28")))
def test_any_policy_bytes_are_loaded_or_refused(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        check_policy_file(Path(folder), data)


def test_a_radius_too_large_for_a_float_is_a_policy_error() -> None:
    """Found by the bench fuzzer: an integer radius beyond float's range raised OverflowError
    out of the loader instead of a PolicyError naming the key."""
    text = SHIPPED.replace("default_radius_m = ", "default_radius_m = 1" + "0" * 400 + " # ", 1)
    assert text != SHIPPED
    try:
        parse_policy(text, SOURCE)
    except PolicyError as exc:
        assert "default_radius_m" in str(exc) and "out of range" in exc.problem
    else:
        raise AssertionError("a 401-digit radius was accepted")
