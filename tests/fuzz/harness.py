"""What every fuzzer shares: hypothesis settings scaled for the suite or the bench, an example
counter, byte- and line-level mutators, and an event loop that hosts real parts across examples.

The suite runs each fuzzer with a small, fixed budget (times ``SAFETYNET_FUZZ_SCALE``, 1 unless
set); ``bench/fuzz.py`` runs the same checks and strategies with its own, large budgets and
reads ``EXAMPLES``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

T = TypeVar("T")

#: Examples run per fuzzer, by name (the bench prints them).
EXAMPLES: collections.Counter[str] = collections.Counter()


def scale() -> float:
    return float(os.environ.get("SAFETYNET_FUZZ_SCALE", "1"))


def fuzz_settings(examples: int) -> settings:
    """``examples`` in the suite, times the bench's scale; no example database, no deadline
    (the host is shared), no shrinking budget beyond hypothesis' default."""
    return settings(max_examples=max(1, int(examples * scale())), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much,
                                           HealthCheck.large_base_example])


def counted(name: str) -> None:
    EXAMPLES[name] += 1


# --- mutators ----------------------------------------------------------------------------------

@st.composite
def mutated_bytes(draw: st.DrawFn, seeds: Sequence[bytes]) -> bytes:
    """A valid payload with a few bytes flipped, inserted, deleted, or cut off."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(("flip", "insert", "delete", "truncate", "splice")))
        at = draw(st.integers(0, len(data)))
        if action == "flip" and data:
            at = min(at, len(data) - 1)
            data[at] ^= draw(st.integers(1, 255))
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif action == "delete" and data:
            del data[at:at + draw(st.integers(1, 8))]
        elif action == "truncate":
            del data[at:]
        elif action == "splice":
            data[at:at] = draw(st.sampled_from(seeds))[:draw(st.integers(0, 64))]
    return bytes(data)


def any_payload(seeds: Sequence[bytes]) -> st.SearchStrategy[bytes]:
    """Random bytes, or a valid payload mutated at the byte level, or one untouched."""
    return st.one_of(st.binary(max_size=512), mutated_bytes(seeds), st.sampled_from(seeds))


NASTY_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\x00", "\r\n", "\ufeff", "=cmd|' /C calc'!A0", "+1", "-1", "@SUM(A1)",
                     "NaN", "inf", "-inf", "1e309", "9" * 400, "\"", "\"\"", ",", "'", "\\",
                     "../../etc/passwd", "rtsp://u:p@h/x", "한국어", "\U0001f4f9", "a" * 5000]),
)


@st.composite
def mutated_lines(draw: st.DrawFn, seeds: Sequence[str], value: st.SearchStrategy[str]) -> str:
    """A valid text file with lines dropped, duplicated, swapped, or with a value replaced."""
    lines = draw(st.sampled_from(seeds)).split("\n")
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(("drop", "duplicate", "swap", "replace", "insert")))
        at = draw(st.integers(0, max(0, len(lines) - 1)))
        if action == "drop" and lines:
            del lines[at]
        elif action == "duplicate" and lines:
            lines.insert(at, lines[at])
        elif action == "swap" and len(lines) > 1:
            other = draw(st.integers(0, len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
        elif action == "replace" and lines:
            lines[at] = _replace_value(lines[at], draw(value))
        elif action == "insert":
            lines.insert(at, draw(value))
    return "\n".join(lines)


def _replace_value(line: str, value: str) -> str:
    """``key = value`` → ``key = <value>``; a CSV row's cell → ``<value>``; else the value."""
    if "=" in line:
        return line.split("=", 1)[0] + "= " + value
    if "," in line:
        cells = line.split(",")
        cells[len(value) % len(cells)] = value
        return ",".join(cells)
    return value


# --- a loop that hosts real parts across examples -----------------------------------------------

class LoopHost:
    """An event loop that keeps running parts (broker, core, agent) between examples.

    Hypothesis drives synchronous tests; each example runs its coroutine on this loop with
    ``run()``. The parts live in one host task, entered and left in that task, so every async
    context manager opens and closes in the same task (as they require).
    """

    def __init__(self) -> None:
        self._runner = asyncio.Runner()
        self._stop: asyncio.Event | None = None
        self._host: asyncio.Task[None] | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def start(self, parts: Callable[[], contextlib.AbstractAsyncContextManager[T]]) -> T:
        """Enter ``parts()`` in the host task and return what it yields."""
        ready: asyncio.Future[T] | None = None

        async def host() -> None:
            assert self._stop is not None and ready is not None
            try:
                async with parts() as value:
                    ready.set_result(value)
                    await self._stop.wait()
            except BaseException as exc:
                if not ready.done():
                    ready.set_exception(exc)
                raise

        async def begin() -> T:
            nonlocal ready
            self._stop = asyncio.Event()
            ready = asyncio.get_running_loop().create_future()
            self._host = asyncio.create_task(host(), name="fuzz-host")
            return await ready

        return self.run(begin())

    def close(self) -> None:
        async def end() -> None:
            if self._stop is not None and self._host is not None:
                self._stop.set()
                await self._host

        try:
            self.run(end())
        finally:
            self._runner.close()


@contextlib.contextmanager
def hosted(parts: Callable[[], contextlib.AbstractAsyncContextManager[T]]) -> Any:
    """``with hosted(parts) as (host, value):`` — a LoopHost running ``parts`` for the block."""
    host = LoopHost()
    try:
        value = host.start(parts)
        yield host, value
    finally:
        host.close()
