"""Leader-only duties: expiring TTL sessions.

Only the leader expires sessions, and it does so by *proposing* ``SESSION expire`` with its clock
reading inside the command; every replica re-checks that reading against the replicated deadline,
so an expiry that raced a renewal changes nothing, and every replica reaches the same result.

The replicated deadline is ``2 * TTL`` after the last create or renew (see
:mod:`beacon.server.sessions`). On becoming leader the reaper also gives every TTL session a fresh
``2 * TTL`` of grace, as Consul resets its session timers on failover: a new leader whose clock runs
ahead of the old one's must not expire sessions whose owners are renewing them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from beacon.durations import parse_duration
from beacon.server.commands import Record, SessionExpire
from beacon.server.fsm import ApplyResult, StateStore
from beacon.server.sessions import TTL_MULTIPLIER

log = logging.getLogger("beacon.server.leader")

Submit = Callable[[Record], Awaitable[ApplyResult]]


class SessionReaper:
    """Runs on the event loop of a server; proposes expiries while this server is the leader.

    ``clock`` is injectable (wall-clock seconds) so tests can move time by hand; ``max_sleep`` bounds
    how late an expiry can be noticed.
    """

    def __init__(self, store: StateStore, submit: Submit, is_leader: Callable[[], bool],
                 clock: Callable[[], float] = time.time, max_sleep: float = 1.0) -> None:
        self.store = store
        self.submit = submit
        self.is_leader = is_leader
        self.clock = clock
        self.max_sleep = max_sleep
        self.leader_since: float | None = None
        self._grace: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._kick = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="session-reaper")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 5)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            self._task = None

    def kick(self) -> None:
        """Look again now (a session was created with a short TTL)."""
        self._kick.set()

    def due(self, now: float) -> tuple[list[str], float | None]:
        """Sessions whose deadline (and leader grace) has passed at `now`, and the next deadline."""
        due: list[str] = []
        nxt: float | None = None
        with self.store.lock:
            expires = dict(self.store.session_expires)
            ttls = {sid: s.ttl for sid, s in self.store.sessions.items() if s.ttl}
        for sid, deadline in expires.items():
            if sid not in ttls:
                continue
            grace = self._grace.get(sid)
            if grace is None and self.leader_since is not None:
                grace = self.leader_since + TTL_MULTIPLIER * parse_duration(ttls[sid])
                self._grace[sid] = grace
            when = max(deadline, grace or 0.0)
            if now >= when:
                due.append(sid)
            elif nxt is None or when < nxt:
                nxt = when
        for sid in [s for s in self._grace if s not in ttls]:
            del self._grace[sid]
        return due, nxt

    async def tick(self) -> float:
        """One round; returns how long to sleep before the next."""
        if not self.is_leader():
            self.leader_since = None
            self._grace.clear()
            return self.max_sleep
        now = self.clock()
        if self.leader_since is None:
            self.leader_since = now
            log.info("leadership acquired: session TTL timers reset")
        due, nxt = self.due(now)
        if due:
            result = await self.submit(SessionExpire(ids=due, now=now))
            if result.error is None and result.value:
                log.info("expired %d session(s): %s", len(result.value), ", ".join(result.value))
        if nxt is None:
            return self.max_sleep
        return min(self.max_sleep, max(0.01, nxt - self.clock()))

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                delay = await asyncio.wait_for(self.tick(), timeout=30)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # no leader right now, a write failed: try again next round
                log.warning("session reaper round failed: %s", exc)
                delay = self.max_sleep
            self._kick.clear()
            waits: list[Any] = [asyncio.ensure_future(self._stop.wait()),
                                asyncio.ensure_future(self._kick.wait())]
            try:
                await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
