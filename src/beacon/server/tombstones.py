"""Leader duty: reap KV tombstones once they are older than the tombstone TTL (Consul's tombstone GC).

A tombstone keeps a deleted key's index so that a prefix read's index never goes backwards; kept
forever they grow without bound. Tombstones carry an index, not a time, so the leader remembers when
it saw each index (one checkpoint per ``granularity``) and proposes ``TOMBSTONE_REAP`` up to the
newest index it saw at least ``ttl`` ago. Apply keeps list indexes at or above the reaped index. A new
leader starts with no checkpoints, so a failover only delays reaping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from beacon.server.commands import Record, TombstoneReap
from beacon.server.fsm import ApplyResult, StateStore

log = logging.getLogger("beacon.server.tombstones")


class TombstoneReaper:
    def __init__(self, store: StateStore, submit: Callable[[Record], Awaitable[ApplyResult]],
                 is_leader: Callable[[], bool], ttl: float = 900.0, granularity: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.submit = submit
        self.is_leader = is_leader
        self.ttl = ttl
        self.granularity = min(granularity, max(0.05, ttl / 2))
        self.clock = clock
        self.checkpoints: deque[tuple[float, int]] = deque()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tombstone-reaper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.granularity)
            try:
                await self.step()
            except Exception as exc:  # no leader right now, say: try again next round
                log.debug("tombstone reaping: %s", exc)

    async def step(self) -> int:
        """One round; returns the index reaped up to (0 if none)."""
        if not self.is_leader():
            self.checkpoints.clear()
            return 0
        now = self.clock()
        self.checkpoints.append((now, self.store.index))
        upto = 0
        while self.checkpoints and self.checkpoints[0][0] <= now - self.ttl:
            upto = self.checkpoints.popleft()[1]
        if upto and any(i <= upto for i in list(self.store.tombstones.values())):
            await self.submit(TombstoneReap(index=upto))
            return upto
        return 0
