"""Running a long-lived command (core, agent, demo, a view) until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from safetynet.commands.exceptions import EXIT_OK


def run_until_signalled(body: Callable[[asyncio.Event], Coroutine[Any, Any, int | None]], *,
                        fast_loop: bool = False) -> int:
    """Run ``body(stop)``; SIGINT/SIGTERM set ``stop`` so it can shut down in order.

    ``fast_loop`` runs it on uvloop when installed (the core: many small gRPC and MQTT calls).
    """

    async def runner() -> int | None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await body(stop)

    loop_factory = None
    if fast_loop:
        try:
            import uvloop
            loop_factory = uvloop.new_event_loop
        except ImportError:
            pass
    with asyncio.Runner(loop_factory=loop_factory) as runner_:
        return runner_.run(runner()) or EXIT_OK
