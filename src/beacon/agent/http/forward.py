"""Client agents forward server-state endpoints (catalog, health, KV, sessions, txn, status, operator)
to a server's HTTP API, retrying another server when one does not answer."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from beacon.agent.http.core import AGENT_KEY

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

log = logging.getLogger("beacon.http.forward")

# Events stay local: they are best-effort and agent-local in Consul too.
FORWARDED_PREFIXES = ("catalog", "health", "kv", "session", "txn", "status", "operator", "snapshot",
                      "coordinate", "query", "internal", "config", "discovery-chain")
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}


def install(app: web.Application) -> None:
    for prefix in FORWARDED_PREFIXES:
        app.router.add_route("*", f"/v1/{prefix}/{{tail:.*}}", forward)
        app.router.add_route("*", f"/v1/{prefix}", forward)


async def forward(request: web.Request) -> web.StreamResponse:
    agent: Agent = request.app[AGENT_KEY]
    session = agent.forward_session
    body = await request.read()
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
    # A prepared query's Near "_agent" means this (client) agent's node, not the server's.
    headers["X-Beacon-Agent-Node"] = agent.config.node_name
    last = "no servers known"
    for target in agent.server_http_targets():
        url = f"http://{target}{request.rel_url}"
        try:
            async with session.request(request.method, url, data=body or None, headers=headers,
                                       allow_redirects=False) as resp:
                data = await resp.read()
                out_headers = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_HEADERS}
                return web.Response(status=resp.status, body=data, headers=out_headers)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            last = f"{target}: {exc or type(exc).__name__}"
            log.debug("forwarding to %s failed: %s", target, exc)
    return web.Response(status=500, text=f"No cluster leader (no server reachable: {last})",
                        content_type="text/plain")
