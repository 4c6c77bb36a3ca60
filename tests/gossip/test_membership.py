"""Membership on real Serf agents: join, failure detection, leave, user events, coordinates."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time

import pytest

from beacon.gossip import Coordinate, MemberEvent, Membership, UserEvent, rtt
from tests.gossip.conftest import Pool, needs_serf, wait_for

pytestmark = needs_serf


async def _next_member_event(sub, kind: str, name: str, timeout: float) -> float:
    """Seconds until `sub` yields a `kind` event naming `name`."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        ev = await sub.get(max(deadline - time.monotonic(), 0.01))
        if isinstance(ev, MemberEvent) and ev.type == kind and any(m.name == name for m in ev.members):
            return time.monotonic() - t0


async def test_members_join_and_report_consul_shape(pool: Pool) -> None:
    for _ in range(3):
        await pool.add()
    await pool.converge()
    members = await pool.members[2].consul_members()
    assert [m["Name"] for m in members] == ["n1", "n2", "n3"]
    n1 = members[0]
    cfg = pool.members[0].serf.config
    assert (n1["Addr"], n1["Port"], n1["Status"]) == (cfg.bind_addr, cfg.port, 1)
    assert n1["Tags"] == {"role": "node", "dc": "dc1"}
    assert set(n1) == {"Name", "Addr", "Port", "Tags", "Status", "ProtocolMin", "ProtocolMax", "ProtocolCur",
                       "DelegateMin", "DelegateMax", "DelegateCur"}
    assert n1["ProtocolMin"] <= n1["ProtocolCur"] <= n1["ProtocolMax"]
    # Tags change at runtime and are gossiped as member-update.
    sub = pool.members[1].subscribe()
    await pool.members[0].set_tags({"role": "consul", "port": "8300", "id": "abc"}, delete=["dc"])
    await _next_member_event(sub, "member-update", "n1", 30)
    servers = await pool.members[1].servers(datacenter="")
    assert [(s.name, s.port, s.node_id) for s in servers] == [("n1", 8300, "abc")]


@pytest.mark.slow
async def test_kill_9_is_seen_failed_by_every_other_member(pool: Pool) -> None:
    for _ in range(4):
        await pool.add()
    await pool.converge()
    victim = pool.members[-1]
    observers = pool.members[:-1]
    subs = [m.subscribe() for m in observers]
    pid = victim.serf.pid
    assert pid is not None and victim.serf.restart is False
    os.kill(pid, signal.SIGKILL)
    times = await asyncio.gather(*(_next_member_event(s, "member-failed", victim.node_name, 60) for s in subs))
    print("\nfailure detection after kill -9 (lan profile, 4 members): "
          + ", ".join(f"{m.node_name} {t:.2f}s" for m, t in zip(observers, times, strict=True)))
    for m in observers:
        status = {x.name: x.status for x in await m.members()}
        assert status[victim.node_name] == "failed"
        assert (await m.consul_members())[-1]["Status"] == 4


@pytest.mark.slow
async def test_leave_is_seen_left_and_force_leave_prunes(pool: Pool) -> None:
    for _ in range(4):
        await pool.add()
    await pool.converge()
    leaver, dead = pool.members[3], pool.members[2]
    subs = [m.subscribe() for m in pool.members[:2]]
    await leaver.stop(leave=True)
    await asyncio.gather(*(_next_member_event(s, "member-leave", leaver.node_name, 30) for s in subs))
    for m in pool.members[:2]:
        assert {x.name: x.status_code for x in await m.members()}[leaver.node_name] == 3
    # A failed member is force-left with prune: it is gone from every list at once, without the reap wait.
    os.kill(dead.serf.pid or 0, signal.SIGKILL)
    await asyncio.gather(*(_next_member_event(s, "member-failed", dead.node_name, 60) for s in subs))
    await pool.members[0].force_leave(dead.node_name, prune=True)
    await asyncio.gather(*(_next_member_event(s, "member-reap", dead.node_name, 30) for s in subs))

    async def gone_everywhere() -> bool:
        for m in pool.members[:2]:
            if dead.node_name in {x.name for x in await m.members()}:
                return False
        return True

    await wait_for(gone_everywhere, 30, what="pruned member gone from every list")


async def test_user_event_fired_on_one_reaches_all(pool: Pool) -> None:
    for _ in range(4):
        await pool.add()
    await pool.converge()
    subs = [m.subscribe() for m in pool.members]
    await pool.members[1].fire("deploy", b"v42")

    async def received(sub) -> UserEvent:
        while True:
            ev = await sub.get(30)
            if isinstance(ev, UserEvent):
                return ev

    got = await asyncio.gather(*(received(s) for s in subs))
    assert {(e.name, e.payload) for e in got} == {("deploy", b"v42")}
    assert len({e.ltime for e in got}) == 1


async def test_query_is_answered_by_members(pool: Pool) -> None:
    for _ in range(3):
        await pool.add()
    await pool.converge()

    async def answer(m: Membership) -> None:
        sub = m.subscribe()
        async for ev in sub:
            if ev.__class__.__name__ == "QueryEvent" and ev.name == "whoami":
                await m.respond(ev, m.node_name.encode())
                return

    tasks = [asyncio.create_task(answer(m)) for m in pool.members[1:]]
    answers = await pool.members[0].query("whoami", timeout=2.0)
    await asyncio.gather(*tasks)
    assert answers == {"n2": b"n2", "n3": b"n3"}


async def test_coordinates_are_returned_and_estimate_rtt(pool: Pool) -> None:
    for _ in range(3):
        await pool.add()
    await pool.converge()
    a, b = pool.members[0], pool.members[1]
    own = await a.coordinate()
    assert isinstance(own, Coordinate) and len(own.vec) == 8 and own.is_valid()
    # A peer's coordinate is cached once Serf has pinged it (a few probe intervals).
    peer = await wait_for(lambda: a.coordinate(b.node_name), 30, what="a cached coordinate for n2")
    estimate = rtt(own, peer)
    assert 0 < estimate < 1.0, estimate  # loopback: well under a second
    assert own.to_json().keys() == {"Vec", "Error", "Adjustment", "Height"}
    assert await a.coordinate("no-such-node") is None
    assert math.isinf(rtt(own, None))


async def test_consul_user_events_ride_serf_and_malformed_ones_are_dropped(pool: Pool) -> None:
    from beacon.gossip.events import decode_user_event, encode_user_event

    for _ in range(3):
        await pool.add()
    await pool.converge()
    subs = [m.subscribe() for m in pool.members]
    ev = {"ID": "7b0f2c3e-0000-4000-8000-000000000001", "Name": "deploy", "Payload": b"v1",
          "NodeFilter": "n.*", "ServiceFilter": "", "TagFilter": ""}
    name, payload = encode_user_event(ev)
    assert name == "consul:event:deploy"
    await pool.members[0].fire(name, payload)
    for sub in subs:
        while True:
            got = await sub.get(30)
            if isinstance(got, UserEvent):
                break
        decoded = decode_user_event(got.name, got.payload, got.ltime)
        assert decoded is not None and decoded["LTime"] == got.ltime >= 1
        assert {k: decoded[k] for k in ev} == ev and decoded["Version"] == 1
    # Untrusted bytes: not msgpack, wrong types, a name that does not match, another serf event.
    assert decode_user_event("consul:event:x", b"\xc1\xc1") is None
    assert decode_user_event("consul:event:x", encode_user_event({"Name": "x", "ID": 5})[1]) is None
    assert decode_user_event("consul:event:y", encode_user_event({"Name": "x"})[1]) is None
    assert decode_user_event("deploy", payload) is None
