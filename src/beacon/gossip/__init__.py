"""Gossip membership on Serf: a supervised ``serf agent`` per pool, its RPC client, and the facade.

Modules: ``supervisor`` (SerfConfig, SerfAgent: run/restart the child, keyring and snapshot files),
``rpc`` (SerfClient: the msgpack RPC protocol), ``membership`` (Membership: members in Consul's
shapes, events, user events, queries, keyring, coordinates), ``coordinate`` (RTT estimates and
sorting), ``tags`` (Consul's member tags, servers from tags), ``events`` (Consul user events over Serf),
``pools`` (Gossip: an agent's LAN and WAN pools, joins and shutdown, from its config), ``reconcile``
(the leader's membership -> catalog rules, as pure functions).

How the agent uses it (issue 12, done)
======================================

* ``agent/cluster.py``: ``Cluster`` starts the pools with ``Gossip.start(GossipSettings.from_agent_config
  (...))`` (LAN always, WAN on servers; ``-join``/``-retry-join``/``-join-wan``/``-retry-join-wan``), keeps a
  member view refreshed on member events and every second, finds servers from tags (``rpc_port``,
  ``http_port``, ``dns_port`` besides Consul's), files user events, and serves the servers' internal RPC
  on ``-server-rpc-port`` (8303; 8300 is the etcd peer port, 8301/8302 Serf's).
* ``agent/reconcile.py``: the consensus leader applies ``reconcile.full_pass`` and
  ``reconcile.dead_servers`` (autopilot) to the catalog and etcd's membership.
* ``agent/servers.py``: ``-bootstrap-expect`` waits for that many servers in gossip.
* ``agent/http/federation.py``: ``?dc=`` forwarding, ``/v1/catalog/datacenters``, remote DNS, over the
  WAN pool; ``agent/http/coordinate.py``: ``?near=``; keyring and coordinate endpoints installed on
  every agent. docs/architecture.md ("Membership") has the whole picture.
"""

from beacon.gossip.coordinate import Coordinate, rtt, sort_by_rtt, sort_datacenters
from beacon.gossip.membership import (
    KeyringError,
    Member,
    MemberEvent,
    Membership,
    QueryEvent,
    Subscription,
    UserEvent,
)
from beacon.gossip.pools import Gossip, GossipSettings
from beacon.gossip.rpc import (
    SerfAuthError,
    SerfClient,
    SerfConnectionError,
    SerfError,
    SerfProtocolError,
    SerfRPCError,
    SerfTimeout,
)
from beacon.gossip.supervisor import LAN_PORT, WAN_PORT, SerfAgent, SerfConfig, SerfNotFound, find_serf
from beacon.gossip.tags import ServerInfo, consul_tags, server_info, wan_member_name

__all__ = [
    "LAN_PORT", "WAN_PORT", "Coordinate", "Gossip", "GossipSettings", "KeyringError", "Member", "MemberEvent", "Membership", "QueryEvent",
    "SerfAgent", "SerfAuthError", "SerfClient", "SerfConfig", "SerfConnectionError", "SerfError", "SerfNotFound",
    "SerfProtocolError", "SerfRPCError", "SerfTimeout", "ServerInfo", "Subscription", "UserEvent", "consul_tags",
    "find_serf", "rtt", "server_info", "sort_by_rtt", "sort_datacenters", "wan_member_name",
]
