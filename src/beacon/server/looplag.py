"""How long callbacks hold the event loop: a timer that measures its own lateness.

Every ``INTERVAL`` a sleeping task wakes and records how much later than asked it ran: the time
some other callback (an apply burst, a collection, a snapshot) held the loop, which is what a DNS
or HTTP answer queued behind it waited. Exported as ``beacon_event_loop_lag_seconds`` (histogram)
and ``beacon_event_loop_lag_max_seconds``, with the collector's full-collection count and longest
pause (:mod:`beacon.server.gcpause`), so a benchmark or an operator sees stalls directly.
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import Gauge, Histogram

from beacon.server import gcpause
from beacon.telemetry import REGISTRY

INTERVAL = 0.02  # 50 wake-ups a second: well under 1% of a core

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LAG = Histogram("beacon_event_loop_lag_seconds", "How late a periodic timer on the event loop ran: the time "
                "other callbacks held the loop.", buckets=BUCKETS, registry=REGISTRY)
LAG_CPU = Histogram("beacon_event_loop_lag_cpu_seconds", "The part of each lateness the loop's own thread spent "
                    "on the CPU (the rest: waiting for a core on a busy machine).", buckets=BUCKETS, registry=REGISTRY)
LAG_MAX = Gauge("beacon_event_loop_lag_max_seconds", "The longest event loop stall measured since start.",
                registry=REGISTRY)
GC_FULL = Gauge("beacon_gc_full_collections", "Full (generation 2) collections since start.", registry=REGISTRY)
GC_FULL_MAX = Gauge("beacon_gc_full_collection_max_seconds", "The longest full collection since start (CPU seconds).",
                    registry=REGISTRY)


async def probe(interval: float = INTERVAL) -> None:
    loop = asyncio.get_running_loop()
    worst = 0.0
    while True:
        asked = loop.time() + interval
        cpu = time.thread_time()
        await asyncio.sleep(interval)
        lag = max(0.0, loop.time() - asked)
        LAG.observe(lag)
        # The loop's thread was on the CPU for this much of the interval: a stall of its own work
        # shows in both figures, a wait for a core (other processes) only in the wall-clock one.
        LAG_CPU.observe(min(lag, time.thread_time() - cpu))
        if lag > worst:
            worst = lag
            LAG_MAX.set(lag)
        GC_FULL.set(gcpause.stats["full_collections"])
        GC_FULL_MAX.set(gcpause.stats["longest_full_ms"] / 1000)
