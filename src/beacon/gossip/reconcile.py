"""The leader's duty, as Consul's leader does it: turn gossip membership into catalog writes.

Pure functions: given LAN members (from ``Membership.members()`` or a ``MemberEvent``) and what the
catalog holds for their nodes, say which writes bring the catalog in line. The leader submits them as
its own commands (REGISTER / DEREGISTER in today's FSM); nothing here knows the command format, so it
survives the consensus rework.

Consul's rules (agent/consul/leader.go, reconcileMember):

* alive  -> the node is registered at the member's address with ``serfHealth`` passing; a server
  also gets the ``consul`` service on its server port (from the ``port`` tag);
* failed -> the node stays registered, ``serfHealth`` critical ("Agent not live or unreachable"),
  so its services leave DNS and ``?passing``;
* left   -> the node is deregistered (a server also leaves the consensus membership);
* reaped -> the node is deregistered;
* leaving, none -> nothing yet;
* and ``reaped_nodes``: a catalog node that has a ``serfHealth`` check but is no longer a member at
  all (reaped while there was no leader) is deregistered too.

Only members of this datacenter count (``dc`` tag), and a write is proposed only when the catalog
differs, so a periodic full pass costs nothing when all is in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from beacon.gossip.membership import Member, MemberEvent
from beacon.model import SERF_ALIVE_OUTPUT, SERF_DEAD_OUTPUT


@dataclass(frozen=True, slots=True)
class CatalogNode:
    """What the catalog holds for a node, as far as reconciliation cares."""

    address: str
    serf_health: str | None          # status of its serfHealth check, None if it has none
    consul_service_port: int | None  # port of its `consul` service, None if it has none


@dataclass(frozen=True, slots=True)
class Register:
    node: str
    address: str
    node_id: str
    datacenter: str
    serf_health: str                 # "passing" | "critical"
    output: str
    consul_service_port: int | None  # register the `consul` service (servers) on this port


@dataclass(frozen=True, slots=True)
class Deregister:
    node: str
    reason: str                      # "left" | "reaped"
    server: bool = False             # also remove it from the consensus membership


Action = Register | Deregister


def member_actions(member: Member, catalog: CatalogNode | None, datacenter: str, *,
                   reaped: bool = False) -> list[Action]:
    """The writes one member's state calls for (empty when the catalog already agrees)."""
    if member.tags.get("dc", datacenter) != datacenter:
        return []
    info = member.server
    if reaped or member.status == "left":
        if catalog is None:
            return []
        return [Deregister(member.name, "reaped" if reaped else "left", server=info is not None)]
    if member.status not in ("alive", "failed"):
        return []
    want = "passing" if member.status == "alive" else "critical"
    port = info.port if info is not None else None
    if catalog is not None and catalog.address == member.addr and catalog.serf_health == want and \
            catalog.consul_service_port == port:
        return []
    return [Register(node=member.name, address=member.addr, node_id=member.tags.get("id", ""),
                     datacenter=datacenter, serf_health=want,
                     output=SERF_ALIVE_OUTPUT if want == "passing" else SERF_DEAD_OUTPUT,
                     consul_service_port=port)]


def event_actions(event: MemberEvent, catalog: Mapping[str, CatalogNode], datacenter: str) -> list[Action]:
    """The writes a member event calls for (member-update re-registers, e.g. a new address)."""
    out: list[Action] = []
    for m in event.members:
        out += member_actions(m, catalog.get(m.name), datacenter, reaped=event.type == "member-reap")
    return out


def full_pass(members: Iterable[Member], catalog: Mapping[str, CatalogNode], datacenter: str,
              self_name: str) -> list[Action]:
    """Consul's periodic reconcile: every member, then every catalog node with serfHealth that gossip
    no longer knows (never this agent's own node)."""
    out: list[Action] = []
    names: set[str] = set()
    for m in members:
        names.add(m.name)
        out += member_actions(m, catalog.get(m.name), datacenter)
    for node, entry in sorted(catalog.items()):
        if node not in names and node != self_name and entry.serf_health is not None:
            out.append(Deregister(node, "reaped", server=entry.consul_service_port is not None))
    return out


def dead_servers(members: Iterable[Member], failed_for: Mapping[str, float], reconnect_timeout: float,
                 datacenter: str) -> list[str]:
    """Autopilot's cleanup_dead_servers: servers of this datacenter failed for longer than the
    reconnect timeout (`failed_for`: seconds each member has been failed, kept by the caller from
    member-failed events) are to be removed from the consensus membership."""
    out = []
    for m in members:
        info = m.server
        if info is not None and info.datacenter == datacenter and m.status == "failed" and \
                failed_for.get(m.name, 0.0) >= reconnect_timeout:
            out.append(m.name)
    return sorted(out)
