"""Production-sized intervals and TTLs, driven by a manual clock instead of waiting for them."""

import asyncio
import heapq
import itertools
import random

from beacon.checks import CheckDefinition, CheckScheduler


class ManualClock:
    """A Clock whose time moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._heap: list = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when, callback):
        entry = [when, next(self._seq), callback]
        heapq.heappush(self._heap, entry)

        class Handle:
            def cancel(self_inner):
                entry[2] = None

        return Handle()

    def pending(self) -> list[float]:
        return sorted(e[0] for e in self._heap if e[2] is not None)

    async def advance_to(self, when: float) -> None:
        while self._heap and self._heap[0][0] <= when:
            at, _, callback = heapq.heappop(self._heap)
            self.now = max(self.now, at)
            if callback is not None:
                callback()
        self.now = when
        for _ in range(5):  # let woken tasks reach their next await
            await asyncio.sleep(0)


async def test_thirty_second_ttl_expires_exactly_after_thirty_seconds(recorder):
    clock = ManualClock()
    sched = CheckScheduler(recorder, clock=clock)
    try:
        sched.add(CheckDefinition.from_json({"Name": "app", "TTL": "30s"}))
        sched.ttl_update("app", "passing", "ok")
        await clock.advance_to(clock.now + 29.999)
        assert [u.status for u in recorder.of("app")] == ["passing"]
        sched.ttl_update("app", "passing", "still ok")  # renews: another full 30 s from now
        renewed_at = clock.now
        await clock.advance_to(renewed_at + 29.9)
        assert [u.status for u in recorder.of("app")] == ["passing", "passing"]
        await clock.advance_to(renewed_at + 30.0)
        assert [u.status for u in recorder.of("app")] == ["passing", "passing", "critical"]
        assert recorder.of("app")[-1].output == "TTL expired (last output before timeout follows): still ok"
    finally:
        async with asyncio.timeout(5):
            await sched.stop()


async def test_ten_second_interval_runs_at_stagger_then_every_ten_seconds(recorder, tcp_listener):
    clock = ManualClock()
    rng = random.Random(42)
    offset = random.Random(42).uniform(0.0, 10.0)  # the stagger the scheduler will draw
    sched = CheckScheduler(recorder, clock=clock, rng=rng)
    start = clock.now
    try:
        sched.add(CheckDefinition.from_json({"Name": "db", "TCP": tcp_listener, "Interval": "10s"}))
        await clock.advance_to(start)  # let the runner arm its first timer
        assert clock.pending() == [start + offset]
        for k in range(4):
            await clock.advance_to(start + offset + 10 * k - 0.001)
            assert len(recorder.of("db")) == k  # not yet
            await clock.advance_to(start + offset + 10 * k)
            await recorder.wait_until(lambda k=k: len(recorder.of("db")) == k + 1)
            await recorder.wait_until(lambda k=k: clock.pending() == [start + offset + 10 * (k + 1)])
        assert list(sched.stats.lateness) == [0.0] * 4
    finally:
        async with asyncio.timeout(5):
            await sched.stop()


async def test_restored_ttl_check_quotes_its_persisted_output_on_expiry(recorder):
    clock = ManualClock()
    sched = CheckScheduler(recorder, clock=clock)
    try:
        sched.add(CheckDefinition.from_json({"Name": "app", "TTL": "30s", "Status": "passing"}),
                  last_output="before restart")
        assert sched.ttl_remaining("app") == 30.0
        await clock.advance_to(clock.now + 12)
        assert sched.ttl_remaining("app") == 18.0
        await clock.advance_to(clock.now + 18)
        assert [(u.status, u.output) for u in recorder.of("app")] == [
            ("critical", "TTL expired (last output before timeout follows): before restart")]
        assert sched.ttl_remaining("app") is None
    finally:
        async with asyncio.timeout(5):
            await sched.stop()
