"""Waiting for a state, not for a time: a test that needs an order of events (a batch running,
requests queued) looks at the state again and again until it holds, within a bound, so that
it neither fails on a slow machine nor passes by luck on a fast one."""
from __future__ import annotations

import asyncio
import time
from typing import Callable


async def until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "the state the test waits for"):
    """Return once `condition()` holds, looking again after each turn of the event loop."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"not reached within {timeout:g} s: {what}"
        await asyncio.sleep(0.001)


def wait_until(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.1) -> None:
    """`until` for a test's own thread, looking every `every` seconds (a request to a server)."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"not reached within {timeout:g} s: {what}"
        time.sleep(every)
