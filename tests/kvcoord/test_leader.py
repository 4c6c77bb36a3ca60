"""The session reaper with a hand-moved clock: only the leader expires, leadership resets the timers,
and the proposed command carries the leader's time."""

from __future__ import annotations

import asyncio

from beacon.model import Session
from beacon.server import sessions
from beacon.server.commands import Record, SessionExpire, encode
from beacon.server.fsm import ApplyResult, MessageType, StateStore
from beacon.server.leader import SessionReaper


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(now: float = 1000.0):
    store = StateStore()
    sessions.install(store)
    store.apply((MessageType.REGISTER, {"node": "n1", "address": "10.0.0.1",
                                        "checks": [{"check_id": "serfHealth", "status": "passing"}]}))
    proposed: list[Record] = []

    async def submit(cmd: Record) -> ApplyResult:
        proposed.append(cmd)
        return store.apply(cmd)

    leader = {"is": True}
    clock = Clock(now)
    reaper = SessionReaper(store, submit, lambda: leader["is"], clock=clock, max_sleep=0.5)
    return store, reaper, clock, leader, proposed


def create(store: StateStore, sid: str, ttl: str, now: float) -> None:
    res = store.apply((MessageType.SESSION, {"op": "create", "now": now,
                                             "session": Session(id=sid, node="n1", ttl=ttl).to_dict()}))
    assert res.error is None


async def test_leader_expires_a_lapsed_session_with_its_own_time() -> None:
    store, reaper, clock, _, proposed = make()
    create(store, "s", "10s", now=1000.0)
    await asyncio.wait_for(reaper.tick(), 5)        # becomes leader at 1000: grace until 1020
    clock.now = 1019.9
    sleep = await asyncio.wait_for(reaper.tick(), 5)
    assert "s" in store.sessions and 0 < sleep <= 0.5
    clock.now = 1020.0
    await asyncio.wait_for(reaper.tick(), 5)
    assert "s" not in store.sessions
    assert proposed[-1] == SessionExpire(ids=["s"], now=1020.0)
    assert encode(proposed[-1]) == (MessageType.SESSION, {"op": "expire", "ids": ["s"], "now": 1020.0})


async def test_follower_never_expires_and_new_leader_grants_a_fresh_ttl() -> None:
    store, reaper, clock, leader, proposed = make()
    create(store, "s", "10s", now=1000.0)
    leader["is"] = False
    clock.now = 1100.0                               # long past the replicated deadline
    await asyncio.wait_for(reaper.tick(), 5)
    assert proposed == [] and "s" in store.sessions
    leader["is"] = True
    await asyncio.wait_for(reaper.tick(), 5)        # leadership at 1100: timers reset to 1120
    assert "s" in store.sessions and proposed == []
    clock.now = 1120.5
    await asyncio.wait_for(reaper.tick(), 5)
    assert "s" not in store.sessions


async def test_renewal_pushes_expiry_back() -> None:
    store, reaper, clock, _, _ = make()
    create(store, "s", "10s", now=1000.0)
    await asyncio.wait_for(reaper.tick(), 5)
    store.apply((MessageType.SESSION, {"op": "renew", "id": "s", "now": 1015.0}))
    clock.now = 1030.0
    await asyncio.wait_for(reaper.tick(), 5)
    assert "s" in store.sessions
    clock.now = 1035.0
    await asyncio.wait_for(reaper.tick(), 5)
    assert "s" not in store.sessions


async def test_running_reaper_stops_promptly() -> None:
    store, reaper, clock, _, _ = make()
    reaper.start()
    await asyncio.sleep(0.05)
    await asyncio.wait_for(reaper.stop(), 2)
