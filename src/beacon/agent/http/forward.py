"""Client agents forward server-state endpoints (catalog, health, KV, sessions, txn, status, operator)
to a server's HTTP API, retrying another server when one does not answer."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from beacon.agent.http.core import AGENT_KEY
from beacon.durations import parse_duration

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

log = logging.getLogger("beacon.http.forward")

# Events stay local: they are best-effort and agent-local in Consul too.
FORWARDED_PREFIXES = ("catalog", "health", "kv", "session", "txn", "status", "operator", "snapshot",
                      "coordinate", "query", "internal", "config", "discovery-chain", "acl", "connect")
# Not passed on in either direction: hop-by-hop headers, and the body framing aiohttp redoes (it
# decompresses what it reads, so Content-Encoding would lie).
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host",
                "content-length", "content-encoding", "proxy-authorization", "proxy-authenticate"}


def install(app: web.Application) -> None:
    for prefix in FORWARDED_PREFIXES:
        app.router.add_route("*", f"/v1/{prefix}/{{tail:.*}}", forward)
        app.router.add_route("*", f"/v1/{prefix}", forward)


def _session_for_this_node(body: bytes, node: str) -> bytes:
    """A session created through a client agent belongs to that client's node, as in Consul (the agent
    fills in its own name), so its locks follow this node's health rather than the server's."""
    try:
        doc = json.loads(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError):
        return body  # the server answers the decode error
    if not isinstance(doc, dict) or any(k.lower() == "node" and v for k, v in doc.items()):
        return body
    doc = {k: v for k, v in doc.items() if k.lower() != "node"}
    doc["Node"] = node
    return json.dumps(doc).encode()


def _wait_seconds(query: Mapping[str, str]) -> float | None:
    """The wait of a blocking query (Consul's default 5 min when only ?index is given), else None."""
    if "index" not in query:
        return None
    try:
        return parse_duration(query["wait"]) if query.get("wait") else 300.0
    except ValueError:
        return None


async def relay(session: aiohttp.ClientSession, method: str, url: str, body: bytes, headers: dict[str, str],
                **opts: Any) -> web.Response:
    """One request passed to another agent, its answer passed back without hop-by-hop headers.
    Connection errors are the caller's to handle (it tries the next server)."""
    async with session.request(method, url, data=body or None, headers=headers, allow_redirects=False,
                               **opts) as resp:
        data = await resp.read()
        out = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_HEADERS}
        return web.Response(status=resp.status, body=data, headers=out)


async def forward(request: web.Request) -> web.StreamResponse:
    agent: Agent = request.app[AGENT_KEY]
    session = agent.forward_session
    body = await request.read()
    if request.method == "PUT" and request.path == "/v1/session/create":
        body = _session_for_this_node(body, agent.config.node_name)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
    # A prepared query's Near "_agent" means this (client) agent's node, not the server's.
    headers["X-Beacon-Agent-Node"] = agent.config.node_name
    last = "no servers known"
    wait = _wait_seconds(request.query)
    deadline = time.monotonic() + wait if wait is not None else None
    from beacon.agent.security import server_api_targets

    targets = server_api_targets(agent)
    if not targets and agent.cluster is not None:  # just joined: the member view may not have them yet
        await agent.cluster.refresh()
        targets = server_api_targets(agent)
    for target, tls_opts in targets:
        rel = request.rel_url
        if deadline is not None:
            # A blocking query retried on another server waits only for what is left of its wait.
            left = max(0.0, deadline - time.monotonic())
            rel = rel.update_query(wait=f"{int(left * 1000)}ms")
        url = f"{target}{rel}"
        try:
            return await relay(session, request.method, url, body, headers, **tls_opts)
        except aiohttp.ClientConnectorError as exc:  # never reached that server: try the next one
            last = f"{target}: {exc or type(exc).__name__}"
            log.debug("forwarding to %s failed: %s", target, exc)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            last = f"{target}: {exc or type(exc).__name__}"
            log.debug("forwarding to %s failed: %s", target, exc)
            if request.method not in ("GET", "HEAD"):
                # The server had the write and went away before answering: it may have applied it.
                # Sending it to another server could apply it twice (a CAS would then answer 409 for
                # a write that took effect), so the caller gets an error, as from a server.
                return web.Response(status=500, text=f"The server did not answer the write ({last}); it may "
                                    "or may not have been applied", content_type="text/plain")
    return web.Response(status=500, text=f"No cluster leader (no server reachable: {last})",
                        content_type="text/plain")
