"""The scheduler's clock: the event loop's monotonic time and timers, replaceable in tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "LoopClock", "TimerHandle", "sleep_until"]


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle: ...


class LoopClock:
    """The running event loop's clock (``loop.time()``/``loop.call_at``)."""

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_at(when, callback)


async def sleep_until(clock: Clock, when: float) -> None:
    """Sleep until ``clock.time() >= when`` using one timer of ``clock``."""
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def fire() -> None:
        if not fut.done():
            fut.set_result(None)

    handle = clock.call_at(when, fire)
    try:
        await fut
    finally:
        handle.cancel()
