"""/v1/coordinate/*: network coordinates, in Consul's shapes, from this agent's gossip pools.

Consul keeps LAN coordinates in the catalog (agents send theirs to the servers every few seconds);
until that path exists here (it needs the replicated store: see beacon/gossip/__init__.py), these
endpoints answer from the coordinates Serf itself holds: its own and the ones it cached while probing
its peers, which converge on every agent to the same picture. X-Consul-Index is the catalog's index at
read time; blocking on it is not offered for these (they return at once).

* ``GET /v1/coordinate/datacenters``: WAN coordinates of the servers, per datacenter (servers only).
* ``GET /v1/coordinate/nodes``: ``[{"Node", "Segment", "Coord"}]`` for the LAN members.
* ``GET /v1/coordinate/node/:node``: the same for one node; 404 when it has none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from beacon.agent.http.core import HTTPError, Reply, Router, apply_filter, query_options
from beacon.agent.http.gossip_common import gossip_failed, lan_pool, wan_pool
from beacon.gossip import SerfError
from beacon.gossip.tags import split_wan_name

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

router = Router()


def _index(agent: Agent) -> int:
    store = getattr(agent, "store", None)
    return int(getattr(store, "index", 1) or 1)


@router.get("/v1/coordinate/datacenters")
async def coordinate_datacenters(req: web.Request, agent: Agent) -> Reply:
    wan = wan_pool(agent)
    if wan is None:
        return Reply([])  # clients and single-datacenter agents have no WAN pool
    try:
        coords = await wan.coordinates()
    except SerfError as exc:
        raise gossip_failed(exc) from None
    by_dc: dict[str, list[dict[str, Any]]] = {}
    for name, coord in sorted(coords.items()):
        _, dc = split_wan_name(name)
        by_dc.setdefault(dc, []).append({"Node": name, "Coord": coord.to_json()})
    return Reply([{"Datacenter": dc, "AreaID": "wan", "Coordinates": nodes} for dc, nodes in sorted(by_dc.items())])


async def _lan_coordinates(agent: Agent) -> list[dict[str, Any]]:
    try:
        coords = await lan_pool(agent).coordinates()
    except SerfError as exc:
        raise gossip_failed(exc) from None
    return [{"Node": name, "Segment": "", "Coord": c.to_json()} for name, c in sorted(coords.items())]


@router.get("/v1/coordinate/nodes")
async def coordinate_nodes(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    return Reply(apply_filter(opts, await _lan_coordinates(agent)), index=_index(agent))


@router.get("/v1/coordinate/node/{node}")
async def coordinate_node(req: web.Request, agent: Agent) -> Reply:
    query_options(req, agent)
    node = req.match_info["node"]
    pool = lan_pool(agent)
    try:
        coord = await pool.coordinate(node)
    except SerfError as exc:
        raise gossip_failed(exc) from None
    if coord is None:
        raise HTTPError(404, "")
    return Reply([{"Node": node, "Segment": "", "Coord": coord.to_json()}], index=_index(agent))
