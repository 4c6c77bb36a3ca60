"""/v1/coordinate/*: network coordinates, in Consul's shapes, from this agent's gossip pools.

Consul keeps LAN coordinates in the catalog (agents send theirs to the servers every few seconds);
until that path exists here (it needs the replicated store: see beacon/gossip/__init__.py), these
endpoints answer from the coordinates Serf itself holds: its own and the ones it cached while probing
its peers, which converge on every agent to the same picture. X-Consul-Index is the catalog's index at
read time; blocking on it is not offered for these (they return at once).

* ``GET /v1/coordinate/datacenters``: WAN coordinates of the servers, per datacenter (servers only).
* ``GET /v1/coordinate/nodes``: ``[{"Node", "Segment", "Coord"}]`` for the LAN members.
* ``GET /v1/coordinate/node/:node``: the same for one node; 404 when it has none.
* ``PUT /v1/coordinate/update``: ``{"Node", "Segment", "Coord"}``, validated (finite, the same
  dimensionality as this agent's) and kept by this agent in place of what Serf says for that node, for
  the reads above and ``?near=`` (not replicated: every agent computes its own from gossip).
* ``?near=`` on catalog and health lists: :func:`sort_near`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from beacon.agent.http.core import Encoded, HTTPError, Reply, Router, apply_filter, query_options, read_json
from beacon.agent.http.gossip_common import gossip_failed, lan_pool, wan_pool
from beacon.gossip import Coordinate, SerfError, sort_by_rtt
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


def _updates(agent: Agent) -> dict[str, Coordinate]:
    updates = getattr(agent, "coordinate_updates", None)
    if updates is None:
        updates = {}
        agent.coordinate_updates = updates  # type: ignore[attr-defined]
    return updates


async def lan_coordinates(agent: Agent) -> dict[str, Coordinate]:
    """Serf's LAN coordinates, with the ones PUT /v1/coordinate/update gave in their place."""
    try:
        coords = await lan_pool(agent).coordinates()
    except SerfError as exc:
        raise gossip_failed(exc) from None
    coords.update(_updates(agent))
    return coords


async def _lan_coordinates(agent: Agent) -> list[dict[str, Any]]:
    coords = await lan_coordinates(agent)
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
        coord = _updates(agent).get(node) or await pool.coordinate(node)
    except SerfError as exc:
        raise gossip_failed(exc) from None
    if coord is None:
        raise HTTPError(404, "")
    return Reply([{"Node": node, "Segment": "", "Coord": coord.to_json()}], index=_index(agent))


@router.put("/v1/coordinate/update")
async def coordinate_update(req: web.Request, agent: Agent) -> Reply:
    query_options(req, agent)
    body = await read_json(req)
    if not isinstance(body, dict) or not isinstance(body.get("Node"), str) or not body["Node"]:
        raise HTTPError(400, "Request decode failed: a Node and a Coord are required")
    try:
        coord = Coordinate.from_json(body.get("Coord") or {})
    except ValueError as exc:
        raise HTTPError(400, f"Request decode failed: {exc}") from None
    own = await lan_pool(agent).coordinate()
    if not coord.is_valid() or (own is not None and not coord.is_compatible_with(own)):
        raise HTTPError(400, "invalid coordinate")
    _updates(agent)[body["Node"]] = coord
    return Reply(True)


async def sort_near(req: web.Request, agent: Agent, body: Any, node_of: Callable[[Any], str]) -> Any:
    """``?near=<node>`` / ``?near=_agent``: the list sorted by estimated round trip from that node (its
    own entries first), by the LAN pool's Vivaldi coordinates; unchanged without ?near or coordinates."""
    near = req.query.get("near", "")
    lan = getattr(agent, "gossip_lan", None)
    if not near or lan is None:
        return body
    if near == "_agent":  # a client forwarding the request names itself (X-Beacon-Agent-Node)
        near = req.headers.get("X-Beacon-Agent-Node") or agent.config.node_name
    items = body.value if isinstance(body, Encoded) else body
    coords = await lan_coordinates(agent)
    origin = coords.get(near)
    if origin is None or not isinstance(items, list):
        return body
    return sort_by_rtt(origin, items, lambda item: coords.get(node_of(item)))
