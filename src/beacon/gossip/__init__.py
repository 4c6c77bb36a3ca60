"""Gossip membership on Serf: a supervised ``serf agent`` per pool, its RPC client, and the facade.

Modules: ``supervisor`` (SerfConfig, SerfAgent: run/restart the child, keyring and snapshot files),
``rpc`` (SerfClient: the msgpack RPC protocol), ``membership`` (Membership: members in Consul's
shapes, events, user events, queries, keyring, coordinates), ``coordinate`` (RTT estimates and
sorting), ``tags`` (Consul's member tags, servers from tags), ``events`` (Consul user events over Serf).

Integration plan (the swap in agent/cluster.py, once the etcd consensus work has landed)
======================================================================================

1. Config (config.py, cli): add ``serf_bin`` (``-serf-bin``), ``serf_wan_port`` (``ports.serf_wan``,
   8302), ``join_wan``/``retry_join_wan`` (``-join-wan``, ``-retry-join-wan``), ``rejoin``
   (``-rejoin``), ``bootstrap`` (``-bootstrap``: make ``-bootstrap`` an exact flag so argparse stops
   taking it for ``-bootstrap-expect``), ``retry_interval``. ``encrypt`` and ``reconnect_timeout``
   exist; drop ``heartbeat_interval`` and ``failure_timeout``.

2. Agent.start() (every mode, -dev included), before HTTP starts::

       from beacon.gossip import Membership, SerfConfig, SerfNotFound, consul_tags, wan_member_name
       lan = SerfConfig(node_name=cfg.node_name, data_dir=cfg.data_dir or <a temp dir for -dev>,
                        bind_addr=cfg.bind_addr, port=cfg.serf_lan_port, advertise_addr=cfg.advertise_addr,
                        pool="lan", encrypt=cfg.encrypt, serf_bin=cfg.serf_bin or None,
                        rejoin_after_leave=cfg.rejoin, reconnect_timeout=f"{int(cfg.reconnect_timeout)}s",
                        user_event_size_limit=1024,   # Consul's 512-byte event + its msgpack envelope
                        tags=consul_tags(server=cfg.server, datacenter=cfg.datacenter, node_id=self.node_id,
                                         server_port=cfg.server_port, bootstrap_expect=cfg.bootstrap_expect,
                                         bootstrap=cfg.bootstrap))
       self.gossip_lan = await Membership.start_pool(lan, datacenter=cfg.datacenter)
       if cfg.server:   # the WAN pool: servers only, named <node>.<dc>
           self.gossip_wan = await Membership.start_pool(SerfConfig(
               node_name=wan_member_name(cfg.node_name, cfg.datacenter), pool="wan", port=cfg.serf_wan_port,
               tags=consul_tags(server=True, wan=True, ...same...), ...same addresses and key...),
               datacenter=cfg.datacenter)

   ``SerfNotFound`` (no binary) carries the one line to print: fatal unless ``-dev``, where the agent
   logs it and runs alone with ``gossip_lan = None`` (the gossip endpoints then answer 500 saying so).
   Then ``-join``/``-retry-join``: ``await gossip_lan.join(addrs)`` (retry every ``retry_interval``
   until one succeeds for retry-join; fail start for -join); WAN likewise with ``gossip_wan``.
   Agent.stop(): ``await gossip_lan.stop(leave=<leave_on_terminate / graceful leave>)``, same for WAN.

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
   ``cluster.leave()``                     ``await agent.gossip_lan.stop(leave=True)`` (+ gossip_wan)
   ``/v1/agent/self`` Member / Coord       ``(await gossip_lan.local_member()).consul_json()`` /
                                           ``(await gossip_lan.coordinate()).to_json()``
   leader ``reconcile()`` loop             ``sub = gossip_lan.subscribe()`` on gaining leadership; per
                                           ``MemberEvent``: member-join/update -> REGISTER node (+ ``consul``
                                           service for ``m.server``) with serfHealth passing; member-failed ->
                                           serfHealth critical; member-leave -> DEREGISTER (and remove a server
                                           from etcd's membership); member-reap -> DEREGISTER. Also a full pass
                                           over ``await gossip_lan.members()`` on gaining leadership and every
                                           60 s, as Consul's leader does (events are at-most-once).
   autopilot ``cleanup_dead_servers``      servers (``m.server``) ``failed`` longer than the reconnect timeout
                                           -> remove from etcd's member list, then ``force_leave``
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
    "LAN_PORT", "WAN_PORT", "Coordinate", "KeyringError", "Member", "MemberEvent", "Membership", "QueryEvent",
    "SerfAgent", "SerfAuthError", "SerfClient", "SerfConfig", "SerfConnectionError", "SerfError", "SerfNotFound",
    "SerfProtocolError", "SerfRPCError", "SerfTimeout", "ServerInfo", "Subscription", "UserEvent", "consul_tags",
    "find_serf", "rtt", "server_info", "sort_by_rtt", "sort_datacenters", "wan_member_name",
]
