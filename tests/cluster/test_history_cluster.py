"""History check on the 3-server cluster: 8 clients doing CAS increments and consistent reads while
the Raft leader is killed (and later restarted, and the next leader killed). The history must be
linearizable and no acknowledged increment may be lost.

CI runs 12 s; BEACON_HISTORY_SECONDS=30 gives the full run.
"""

from __future__ import annotations

import asyncio
import os
import signal
from concurrent.futures import ThreadPoolExecutor

from tests.cluster.conftest import start_cluster
from tests.kvcoord.workload import run_workload

SECONDS = float(os.environ.get("BEACON_HISTORY_SECONDS", "12"))


def test_cas_history_under_leader_kills_is_linearizable(tmp_path) -> None:
    cluster = start_cluster(tmp_path, clients=0)
    killed: list[str] = []
    events: list[str] = []

    def nemesis_step() -> None:
        if killed and len(events) % 2 == 1:
            name = killed.pop()
            cluster.start_server(name)
            events.append(f"restart {name}")
            return
        leader = cluster.leader()
        cluster.servers[leader].stop(signal.SIGKILL)
        killed.append(leader)
        events.append(f"kill {leader}")

    # One worker runs the steps in order, off the workload's clock: restarting an agent (waiting for its
    # ready line) can take longer than the nemesis interval on a loaded machine.
    steps = ThreadPoolExecutor(max_workers=1)

    async def nemesis() -> None:
        steps.submit(nemesis_step)

    addrs = [cluster.servers[n].http_addr for n in ("s1", "s2", "s3")]
    try:
        result = asyncio.run(asyncio.wait_for(
            run_workload(addrs, SECONDS, clients=8, keys=3, seed=7, nemesis=nemesis,
                         nemesis_interval=SECONDS / 4, timeout=8.0), timeout=SECONDS + 120))
    finally:
        steps.shutdown(wait=True)
        cluster.stop_all()
    assert events[0].startswith("kill"), events
    assert sum(e.startswith("kill") for e in events) >= 2, events
    n_ok = sum(result.acked.values())
    assert n_ok >= 50, (n_ok, result.errors)
    assert result.lost_increments() == []
    verdict = result.check()
    assert verdict.ok, verdict.detail
    assert not verdict.exhausted
    print(f"{len(result.ops)} ops, {n_ok} acknowledged increments, {result.errors} errors, nemesis: {events}")
