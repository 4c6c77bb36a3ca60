"""Leader reconciliation rules (membership -> catalog writes), unit level, then fed by real serf events."""

from __future__ import annotations

import os
import signal

from beacon.gossip import MemberEvent, consul_tags
from beacon.gossip.membership import Member
from beacon.gossip.reconcile import CatalogNode, Deregister, Register, dead_servers, event_actions, full_pass
from beacon.model import SERF_ALIVE_OUTPUT, SERF_DEAD_OUTPUT
from tests.gossip.conftest import Pool, needs_serf

pytestmark = needs_serf


def member(name: str, status: str = "alive", *, server: bool = False, dc: str = "dc1",
           addr: str = "10.0.0.1") -> Member:
    return Member(name=name, addr=addr, port=8301, status=status,
                  tags=consul_tags(server=server, datacenter=dc, node_id=f"id-{name}", server_port=8300))


def test_each_status_maps_to_consul_leader_writes() -> None:
    catalog = {"c1": CatalogNode("10.0.0.1", "passing", None), "gone": CatalogNode("10.0.0.9", "passing", None),
               "leader": CatalogNode("10.0.0.5", "passing", 8300), "manual": CatalogNode("10.0.0.7", None, None)}
    members = [member("c1"),                                 # in order: nothing to write
               member("c2"),                                 # new: register passing
               member("s1", "failed", server=True),          # failed server: critical, consul service
               member("c3", "left"),                         # left, not in catalog: nothing
               member("c4", "leaving"),                      # leaving: not yet
               member("x1", dc="dc2"),                       # another datacenter: not ours
               member("leader", server=True, addr="10.0.0.5")]
    actions = full_pass(members, catalog, "dc1", self_name="leader")
    assert actions == [
        Register("c2", "10.0.0.1", "id-c2", "dc1", "passing", SERF_ALIVE_OUTPUT, None),
        Register("s1", "10.0.0.1", "id-s1", "dc1", "critical", SERF_DEAD_OUTPUT, 8300),
        Deregister("gone", "reaped"),   # has serfHealth, unknown to gossip; "manual" has none: kept
    ]
    # A moved node is re-registered at its new address; a left member in the catalog is deregistered.
    moved = full_pass([member("c1", addr="10.0.0.2"), member("leader", server=True, addr="10.0.0.5")],
                      {"c1": catalog["c1"], "leader": catalog["leader"]}, "dc1", "leader")
    assert [(a.node, a.address) for a in moved if isinstance(a, Register)] == [("c1", "10.0.0.2")]
    left = event_actions(MemberEvent("member-leave", (member("c1", "left"),)), catalog, "dc1")
    assert left == [Deregister("c1", "left")]
    reaped = event_actions(MemberEvent("member-reap", (member("leader", "left", server=True),)), catalog, "dc1")
    assert reaped == [Deregister("leader", "reaped", server=True)]


def test_dead_servers_after_the_reconnect_timeout() -> None:
    members = [member("s1", "failed", server=True), member("s2", "failed", server=True),
               member("c1", "failed"), member("s3", server=True), member("s9", "failed", server=True, dc="dc2")]
    failed_for = {"s1": 80.0, "s2": 10.0, "c1": 500.0, "s9": 500.0}
    assert dead_servers(members, failed_for, 72.0, "dc1") == ["s1"]


async def test_real_member_events_drive_the_rules(pool: Pool) -> None:
    for _ in range(3):
        await pool.add(tags=consul_tags(server=False, datacenter="dc1", node_id="x"))
    await pool.converge()
    catalog = {m.name: CatalogNode(m.addr, "passing", None) for m in await pool.members[0].members()}
    assert full_pass(await pool.members[0].members(), catalog, "dc1", "n1") == []
    sub = pool.members[0].subscribe()
    os.kill(pool.members[2].serf.pid or 0, signal.SIGKILL)
    while True:
        ev = await sub.get(60)
        if isinstance(ev, MemberEvent) and ev.type == "member-failed":
            break
    assert [(a.node, a.serf_health) for a in event_actions(ev, catalog, "dc1")] == [("n3", "critical")]
