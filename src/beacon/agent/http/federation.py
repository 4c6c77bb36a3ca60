"""WAN federation over HTTP: ``?dc=`` forwarding, /v1/catalog/datacenters, remote DNS lookups.

Servers of every datacenter share the Serf WAN pool (members ``<node>.<dc>``) whose tags say where
each server's HTTP API and DNS listen. A request on a server naming another datacenter (``?dc=dc2``,
read or write) is relayed as it is to an alive server of that datacenter, nearest first by network
coordinates; that server answers it as its own. A datacenter no WAN member serves answers Consul's
``No path to datacenter``. Clients are not in the WAN pool: they hand such requests to a server of
their own datacenter, as every catalog request.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from beacon.agent.http.core import AGENT_KEY
from beacon.agent.http.forward import HOP_HEADERS, relay

if TYPE_CHECKING:
    from beacon.agent.agent import Agent
    from beacon.gossip import Member

log = logging.getLogger("beacon.federation")

# Agent-local endpoints answer for this agent whatever ?dc= says (as Consul's agent endpoints ignore it).
_LOCAL_PREFIXES = ("/v1/agent/", "/v1/event/", "/v1/operator/keyring", "/v1/coordinate/", "/ui", "/v1/status/")


_BODY_DC_PATHS = ("/v1/catalog/register", "/v1/catalog/deregister")


async def _body_datacenter(request: web.Request) -> str:
    """A catalog write names its datacenter in the body (``"Datacenter": "dc2"``): forwarded as ?dc= is."""
    import json

    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError:
        return ""  # the handler reports the bad body
    dc = body.get("Datacenter") if isinstance(body, dict) else None
    return dc.lower() if isinstance(dc, str) else ""


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def remote_servers(agent: Agent, dc: str) -> list[Member]:
    """Alive WAN members that are servers of `dc`, nearest first."""
    wan = agent.gossip_wan
    if wan is None:
        return []
    from beacon.gossip import sort_by_rtt

    found = [m for m in await wan.members()
             if m.status == "alive" and m.tags.get("role") == "consul" and m.tags.get("dc") == dc]
    if len(found) < 2:
        return found
    own = await wan.coordinate()
    coords = {m.name: await wan.coordinate(m.name) for m in found}
    return list(sort_by_rtt(own, found, lambda m: coords.get(m.name)))


def no_path() -> web.Response:
    return web.Response(status=500, text="No path to datacenter", content_type="text/plain")


def wants_other_datacenter(request: web.Request) -> bool:
    """Cheap pre-check on every request: a ?dc= in the query string, or a catalog write (whose body
    may name a datacenter)."""
    return "dc=" in request.query_string or (request.method == "PUT" and request.path in _BODY_DC_PATHS)


async def forward_to_datacenter(request: web.Request) -> web.StreamResponse | None:
    """The answer of a server of the datacenter the request names, or None to handle it here."""
    dc = request.query.get("dc", "").lower()
    agent: Agent = request.app[AGENT_KEY]
    if not dc and request.method == "PUT" and request.path in _BODY_DC_PATHS:
        dc = await _body_datacenter(request)
    if not dc or dc == agent.config.datacenter or agent.mode == "client" or request.path.startswith(_LOCAL_PREFIXES):
        return None
    targets = [(m.addr, int(m.tags.get("http_port") or 0)) for m in await remote_servers(agent, dc)]
    targets = [t for t in targets if t[1]]
    if not targets:
        return no_path()
    body = await request.read()
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
    last = ""
    for host, port in targets:
        url = f"http://{_host_port(host, port)}{request.rel_url}"
        try:
            return await relay(agent.forward_session, request.method, url, body, headers)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            last = f"{host}:{port}: {exc or type(exc).__name__}"
            log.debug("forwarding to datacenter %s failed: %s", dc, last)
    return web.Response(status=500, text=f"No path to datacenter (no server of {dc} reachable: {last})",
                        content_type="text/plain")


async def datacenters(agent: Agent) -> list[str]:
    """Known datacenters, nearest first (this one first); just this one without a WAN pool."""
    wan = agent.gossip_wan
    if wan is None:
        return [agent.config.datacenter]
    try:
        out = await wan.datacenters()
    except Exception as exc:  # a restarting Serf child: answer with what is certain
        log.debug("datacenters from the WAN pool: %s", exc)
        return [agent.config.datacenter]
    return out if agent.config.datacenter in out else [agent.config.datacenter, *out]


async def remote_dns_targets(agent: Agent, dc: str) -> list[tuple[str, int]]:
    return [(m.addr, int(m.tags["dns_port"])) for m in await remote_servers(agent, dc)
            if m.tags.get("dns_port", "0") != "0"]
