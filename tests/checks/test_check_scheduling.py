"""When checks run: stagger, no drift, thresholds, replacement, isolation from notifier errors."""

import asyncio
import random
import statistics

import pytest
from _checks_helpers import Recorder

from beacon.checks import CheckDefinition, CheckDefinitionError, CheckError, CheckScheduler


def tcp_check(check_id, target, interval="1s"):
    return CheckDefinition.from_json({"ID": check_id, "Name": check_id, "TCP": target, "Interval": interval})


async def test_first_runs_are_staggered_across_the_interval(recorder, tcp_listener):
    sched = CheckScheduler(recorder, min_interval=0.01, rng=random.Random(3))
    loop = asyncio.get_running_loop()
    added = loop.time()
    try:
        for i in range(40):
            sched.add(tcp_check(f"c{i}", tcp_listener, interval="600ms"))
        await recorder.wait_until(lambda: all(recorder.of(f"c{i}") for i in range(40)), timeout=3)
    finally:
        async with asyncio.timeout(5):
            await sched.stop()
    firsts = sorted(recorder.of(f"c{i}")[0].at - added for i in range(40))
    assert firsts[-1] < 0.6 + 0.3  # every first run falls inside one interval (plus run time, load)
    # spread over the interval rather than bunched: each third of it gets some first runs
    thirds = [sum(1 for t in firsts if k * 0.2 <= t < (k + 1) * 0.2) for k in range(3)]
    assert all(n >= 5 for n in thirds), thirds


async def test_slow_checks_keep_their_schedule_without_drift(scheduler, recorder, http_target):
    # Each run takes ~120 ms of a 250 ms interval. Scheduling from the end of the previous run
    # would space runs ~370 ms apart; scheduling from the due time keeps them 250 ms apart.
    scheduler.add(CheckDefinition.from_json(
        {"Name": "slow", "HTTP": http_target.url("/slow") + "?delay=0.12", "Interval": "250ms"}))
    await recorder.wait_until(lambda: len(recorder.of("slow")) >= 7, timeout=5)
    starts = http_target.hits["/slow"][:7]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert statistics.mean(gaps) == pytest.approx(0.25, abs=0.02), gaps
    assert all(abs(g - 0.25) < 0.1 for g in gaps), gaps
    assert http_target.max_in_flight == 1


async def test_overrunning_check_skips_missed_slots_instead_of_bursting(scheduler, recorder, http_target):
    # 130 ms runs on a 100 ms interval: run every other slot (200 ms apart), never two at once.
    # Catching up on missed slots instead would start runs back to back, 130 ms apart.
    scheduler.add(CheckDefinition.from_json(
        {"Name": "slow", "HTTP": http_target.url("/slow") + "?delay=0.13", "Interval": "100ms"}))
    await recorder.wait_until(lambda: len(recorder.of("slow")) >= 4, timeout=5)
    starts = http_target.hits["/slow"][:4]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert all(abs(g - 0.2) < 0.045 for g in gaps), gaps
    assert http_target.max_in_flight == 1
    assert scheduler.stats.skipped_slots >= 3


async def test_thresholds_hold_status_until_enough_results_in_a_row(scheduler, recorder, http_target):
    # The server answers these codes in order, then 200 for ever.
    http_target.sequence[:] = [200, 500, 500, 500, 200, 500, 200, 200]
    scheduler.add(CheckDefinition.from_json({
        "Name": "flappy", "HTTP": http_target.url("/sequence"), "Interval": "30ms",
        "SuccessBeforePassing": 2, "FailuresBeforeCritical": 3}))
    await recorder.wait_until(lambda: len(http_target.hits.get("/sequence", [])) >= 10, timeout=5)
    reported = [(u.status, u.output.rsplit(" ", 1)[-1]) for u in recorder.of("flappy")]
    # run1 200 -> passing at once (counters start at the thresholds); runs 2-3 held;
    # run4 third 500 -> critical; run5 200 held; run6 500 resets; run7 200 held; run8 second 200 -> passing
    assert reported[:3] == [("passing", "200"), ("critical", "500"), ("passing", "200")]
    assert [s for s, _ in reported[3:]] == ["passing"] * (len(reported) - 3)
    assert len(reported) >= 4


async def test_failures_before_warning_reports_warning_before_critical(scheduler, recorder, http_target):
    http_target.sequence[:] = [200, 500, 500, 500]
    scheduler.add(CheckDefinition.from_json({
        "Name": "w", "HTTP": http_target.url("/sequence"), "Interval": "30ms",
        "FailuresBeforeWarning": 1, "FailuresBeforeCritical": 3}))
    await recorder.wait_until(lambda: len(recorder.of("w")) >= 4, timeout=5)
    assert [u.status for u in recorder.of("w")[:4]] == ["passing", "warning", "warning", "critical"]


async def test_adding_a_check_with_the_same_id_replaces_it(scheduler, recorder, http_target, tcp_listener):
    scheduler.add(tcp_check("c", tcp_listener, interval="30ms"))
    await recorder.wait_status("c", "passing")
    scheduler.add(CheckDefinition.from_json(
        {"ID": "c", "Name": "c", "HTTP": http_target.url("/status/500"), "Interval": "30ms"}))
    n = len(recorder.of("c"))
    await recorder.wait_status("c", "critical", after=n)
    assert len(scheduler) == 1 and scheduler.definition("c").kind == "http"
    await asyncio.sleep(0.1)  # several intervals: the old TCP runner must stay silent
    assert {u.output for u in recorder.of("c")[n + 1:]} <= {"HTTP GET " + http_target.url("/status/500")
                                                            + ": 500 Internal Server Error Output: answer 500"}


async def test_a_failing_notifier_does_not_stop_the_check(tcp_listener):
    calls = []

    class Flaky(Recorder):
        def update_check(self, check_id, status, output):
            calls.append(status)
            super().update_check(check_id, status, output)
            if len(calls) == 1:
                raise RuntimeError("agent hiccup")

    flaky = Flaky()
    sched = CheckScheduler(flaky, min_interval=0.01)
    try:
        sched.add(tcp_check("c", tcp_listener, interval="20ms"))
        await flaky.wait_until(lambda: len(calls) >= 3)
    finally:
        async with asyncio.timeout(5):
            await sched.stop()


async def test_intervals_are_raised_to_the_scheduler_minimum(recorder, tcp_listener):
    sched = CheckScheduler(recorder, min_interval=0.3, rng=random.Random(1))
    try:
        sched.add(tcp_check("c", tcp_listener, interval="10ms"))
        await recorder.wait_until(lambda: len(recorder.of("c")) >= 3, timeout=3)
    finally:
        async with asyncio.timeout(5):
            await sched.stop()
    ups = recorder.of("c")
    assert ups[2].at - ups[1].at == pytest.approx(0.3, abs=0.1)


async def test_add_refuses_invalid_or_unrunnable_checks(scheduler):
    with pytest.raises(CheckDefinitionError, match="Interval must be > 0"):
        scheduler.add(CheckDefinition.from_json({"Name": "x", "TCP": "127.0.0.1:1"}))
    with pytest.raises(CheckError, match="alias source"):
        scheduler.add(CheckDefinition.from_json({"Name": "x", "AliasService": "web"}))
    assert len(scheduler) == 0
    await scheduler.stop()
    with pytest.raises(CheckError, match="stopped"):
        scheduler.add(CheckDefinition.from_json({"Name": "t", "TTL": "1s"}))
