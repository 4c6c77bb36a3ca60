"""Gossip membership on Serf: a supervised ``serf agent`` per pool, its RPC client, and the facade.

Modules: ``supervisor`` (SerfConfig, SerfAgent: run/restart the child, keyring and snapshot files),
``rpc`` (SerfClient: the msgpack RPC protocol), ``membership`` (Membership: members in Consul's
shapes, events, user events, queries, keyring, coordinates), ``coordinate`` (RTT estimates and
sorting), ``tags`` (Consul's member tags, servers from tags), ``events`` (Consul user events over Serf),
``pools`` (Gossip: an agent's LAN and WAN pools, joins and shutdown, from its config), ``reconcile``
(the leader's membership -> catalog rules, as pure functions).

Integration plan (the swap in agent/cluster.py, once the etcd consensus work has landed)
======================================================================================

1. Config (config.py, cli): add ``serf_bin`` (``-serf-bin``), ``serf_wan_port`` (``ports.serf_wan``,
   8302), ``start_join`` (``-join``), ``join_wan``/``retry_join_wan`` (``-join-wan``,
   ``-retry-join-wan``), ``rejoin`` (``-rejoin``), ``retry_interval``: ``GossipSettings.from_agent_config``
   reads them by these names (and defaults them while they are absent). ``-bootstrap`` is accepted
   already. Drop ``heartbeat_interval`` and ``failure_timeout``.

2. Agent.start() (every mode, -dev included), once the HTTP port is known::

       from beacon.gossip import Gossip, GossipSettings
       self.gossip = await Gossip.start(GossipSettings.from_agent_config(
           cfg, self.node_id, extra_tags={"http_port": str(self.http_port)}))
       self.gossip_lan = self.gossip.lan if self.gossip else None   # the endpoints look for these
       self.gossip_wan = self.gossip.wan if self.gossip else None

   That starts the LAN pool (tags from ``consul_tags``: role, dc, id, port, expect, bootstrap, build,
   vsn...), the WAN pool on servers (member ``<node>.<dc>``), ``-join`` (start fails if none answers)
   and ``-retry-join`` (background, every ``retry_interval``). Without a serf binary it returns None
   under -dev (after logging the one line naming the Debian package ``serf``) and otherwise raises
   ``SerfNotFound`` with that line. Agent.stop(): ``await self.gossip.stop(leave=<graceful leave>)``.

3. cluster.py: the heartbeat scheme goes. Delete ``Member``, ``Codec``'s heartbeat use,
   ``rpc_hello``, ``rpc_heartbeat``, ``rpc_leave``, ``rpc_force_leave``, ``_observe``, ``heartbeat_once``,
   ``_heartbeat_loop``, ``detect_failures``, ``_forget`` and the ``reaped`` table. **Port clash:** the
   internal RPC listener binds TCP ``bind:serf_lan_port`` (8301), which Serf now needs (TCP and UDP):
   move what remains of that RPC (apply, node_state, raft/etcd membership) to the server port 8300, as
   Consul's server RPC, or fold it into the HTTP forwarding. What replaces what:

   ======================================  ===================================================================
   today                                   with gossip
   ======================================  ===================================================================
   ``cluster.consul_members()``            ``await agent.gossip_lan.consul_members()``; ``?wan=1`` ->
                                           ``await agent.gossip_wan.consul_members()``
   ``cluster.servers()`` / seeds           ``await agent.gossip_lan.servers()`` -> ``ServerInfo`` (``rpc_addr``,
                                           ``node_id``, ``expect``, ``bootstrap``) read from tags: clients need
                                           no server list once joined to any member
   ``Agent.join(addr)``                    ``await agent.gossip_lan.join([addr])`` (``?wan=1``: gossip_wan)
   ``Agent.force_leave(node, prune)``      ``await agent.gossip_lan.force_leave(node, prune)`` (servers also
                                           on gossip_wan with ``<node>.<dc>``)
   ``cluster.leave()``                     ``await agent.gossip.stop(leave=True)`` (both pools, WAN first)
   ``/v1/agent/self`` Member / Coord       ``(await gossip_lan.local_member()).consul_json()`` /
                                           ``(await gossip_lan.coordinate()).to_json()``
   leader ``reconcile()`` loop             ``sub = gossip_lan.subscribe()`` on gaining leadership; for each
                                           ``MemberEvent``: ``reconcile.event_actions(ev, catalog, dc)``; on
                                           gaining leadership and every 60 s: ``reconcile.full_pass(await
                                           gossip_lan.members(), catalog, dc, self_name)`` (events are
                                           at-most-once). Each ``Register`` -> REGISTER (node, address, id,
                                           serfHealth status/output, ``consul`` service on
                                           ``consul_service_port`` for servers); each ``Deregister`` ->
                                           DEREGISTER (``server=True``: also leave etcd's membership).
                                           ``catalog`` maps node -> ``CatalogNode(address, serfHealth
                                           status, consul service port)`` read from the store.
   autopilot ``cleanup_dead_servers``      ``reconcile.dead_servers(members, failed_for, reconnect_timeout,
                                           dc)`` -> remove from etcd's member list, then ``force_leave``
   ======================================  ===================================================================

4. Endpoints. Install ``agent/http/keyring.py`` and ``agent/http/coordinate.py`` (``router.install(app)``)
   with the agent-local modules in ``Agent._start_http``. ``/v1/event/fire``:
   ``name, payload = events.encode_user_event(ev_json); await gossip_lan.fire(name, payload)`` instead of
   adding to the local buffer; receive with ``gossip_lan.on_event(cb)``: for a ``UserEvent``,
   ``events.decode_user_event(e.name, e.payload, e.ltime)`` -> apply the node/service/tag filters
   (``_matches_local``) -> ``agent.events.add(...)``. ``/v1/catalog/datacenters`` on servers:
   ``await gossip_wan.datacenters()`` (nearest first). ``?dc=X``: a server of X from
   ``await gossip_wan.servers(datacenter=X)``, else "No path to datacenter". ``?near=``:
   ``coordinate.sort_by_rtt(origin, items, coord_of)`` with coordinates from
   ``await gossip_lan.coordinates()`` (until agents push them into the catalog, ``PUT
   /v1/coordinate/update``, which needs the replicated store).

5. .ci/run installs the Debian package ``serf``; pyproject depends on ``msgpack``.
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
