"""History check: 8 concurrent clients doing CAS increments and reads against a real agent; the
recorded history must be linearizable and no acknowledged increment may be lost.

CI runs it for 8 s; set ``BEACON_HISTORY_SECONDS=30`` for the full run (or use
``python3 -m tests.kvcoord.workload --addr HOST:PORT --seconds 30`` against any agents).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os

from tests.conftest import launch
from tests.kvcoord.workload import run_workload

SECONDS = float(os.environ.get("BEACON_HISTORY_SECONDS", "8"))


def test_cas_increment_history_is_linearizable_and_loses_nothing() -> None:
    agent = launch()
    nemesis_calls = 0

    async def nemesis() -> None:
        # The 3-server cluster will plug a leader kill in here; on one dev agent it only counts.
        nonlocal nemesis_calls
        nemesis_calls += 1

    try:
        result = asyncio.run(asyncio.wait_for(
            run_workload([agent.http_addr], SECONDS, clients=8, keys=3, seed=1, nemesis=nemesis,
                         nemesis_interval=SECONDS / 4), timeout=SECONDS + 60))
    finally:
        agent.stop()
    assert nemesis_calls >= 2
    n_cas = sum(1 for o in result.ops if o.kind == "cas")
    n_ok = sum(result.acked.values())
    # The run must have had real contention to mean anything.
    assert n_cas >= 100 and 0 < n_ok < n_cas, (n_cas, n_ok)
    verdict = result.check()
    assert verdict.ok, verdict.detail
    assert not verdict.exhausted
    assert result.lost_increments() == []
    # The checker is not vacuous on this very history: forge a lost update and it must object.
    ok_cas = [i for i, o in enumerate(result.ops) if o.kind == "cas" and o.output and o.output[0] == "ok"]
    forged = list(result.ops)
    victim = forged[ok_cas[len(ok_cas) // 2]]
    forged.append(dataclasses.replace(victim, client=99, call=victim.ret + 1e6, ret=victim.ret + 2e6,
                                      output=("ok", victim.output[1] + 10**9)))
    assert not dataclasses.replace(result, ops=forged).check().ok
