"""The HTTP fast path's read barrier (EtcdConsensus.read_barrier_soon) over a fake etcd client: the
callback runs once a linearizable read that started after the call has answered and this server has
applied that revision; requests arriving while a read is in flight share the next one; a refused
read, or no known leader, answers False so that the caller takes the retrying path."""

from __future__ import annotations

import asyncio
import time

from beacon.server.etcd_client import KV, EtcdUnavailable
from beacon.server.etcd_log import EtcdConsensus
from beacon.server.fsm import StateStore


class FakeClient:
    """range() answers the log key at `self.rev` as of the moment the read *starts*, after a gate."""

    def __init__(self, rev: int) -> None:
        self.rev = rev
        self.started: list[int] = []
        self.gates: list[asyncio.Event] = []
        self.fail = False

    async def range(self, key: bytes, **kw: object) -> tuple[int, list[KV]]:
        rev = self.rev
        self.started.append(rev)
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        if self.fail:
            raise EtcdUnavailable("etcd: request timed out")
        return rev, [KV(key, b"", rev, 0, 0)]


def log_with(client: FakeClient, applied: int) -> EtcdConsensus:
    log = EtcdConsensus(StateStore(), client, "dc1", "s1", "127.0.0.1:8300", hold_timeout=0.5)  # type: ignore[arg-type]
    log.applied = applied
    log.leader = {"name": "s1", "addr": "127.0.0.1:8300"}
    log._last_ok = time.monotonic()
    return log


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_answers_once_the_read_started_after_the_call_is_applied() -> None:
    async def main() -> None:
        client = FakeClient(rev=10)
        log = log_with(client, applied=10)
        got: list[str] = []
        log.read_barrier_soon(lambda ok: got.append(f"a{ok}"))
        await settle()
        assert client.started == [10] and got == []  # the read is in flight
        client.rev = 12  # a write commits while the first read is in flight
        log.read_barrier_soon(lambda ok: got.append(f"b{ok}"))  # must not ride on the first read
        client.gates[0].set()
        await settle()
        assert got == ["aTrue"]  # applied 10 >= 10, answered from the reading task itself
        assert client.started == [10, 12]  # b's own read started after b asked
        client.gates[1].set()
        await settle()
        assert got == ["aTrue"]  # b waits until revision 12 is applied here
        log._apply_env(11, {"t": 0.0, "b": []}, {})
        await settle()
        assert got == ["aTrue"]
        log._apply_env(12, {"t": 0.0, "b": []}, {})
        await settle()
        assert got == ["aTrue", "bTrue"]
    asyncio.run(main())


def test_concurrent_callers_share_one_read() -> None:
    async def main() -> None:
        client = FakeClient(rev=5)
        log = log_with(client, applied=5)
        got: list[bool] = []
        for _ in range(3):
            log.read_barrier_soon(got.append)
        await settle()
        client.gates[0].set()
        await settle()
        assert got == [True, True, True] and len(client.started) == 1
    asyncio.run(main())


def test_a_refused_read_or_no_leader_answers_false() -> None:
    async def main() -> None:
        client = FakeClient(rev=5)
        client.fail = True
        log = log_with(client, applied=5)
        got: list[bool] = []
        log.read_barrier_soon(got.append)
        await settle()
        client.gates[0].set()
        await settle()
        assert got == [False]
        client.fail = False
        log.leader = None
        log.read_barrier_soon(got.append)
        await settle()
        client.gates[1].set()
        await settle()
        assert got == [False, False]
    asyncio.run(main())


def test_no_apply_within_the_hold_timeout_answers_false() -> None:
    async def main() -> None:
        client = FakeClient(rev=9)
        log = log_with(client, applied=3)
        got: list[bool] = []
        log.read_barrier_soon(got.append)
        await settle()
        client.gates[0].set()
        await settle()
        assert got == []
        await asyncio.sleep(0.6)  # hold_timeout 0.5 s
        assert got == [False] and log._apply_callbacks == []
    asyncio.run(main())
