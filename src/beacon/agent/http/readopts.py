"""Read-side query options Consul honours on several endpoints: ``?cached`` and ``?peer``.

``?cached`` (the agent cache): the reply carries ``X-Cache: HIT|MISS`` and, on a hit, ``Age`` (whole
seconds since the cached value was fetched). Beacon answers every read from the replicated state
anyway, so the cache here only tracks *when* the value at a given index was first served: a read
whose index equals the remembered one is a hit; a newer index (the data changed) is a miss and
restarts the age. ``Cache-Control: max-age=N`` turns a hit older than N seconds into a miss, and
``must-revalidate`` is accepted (every Beacon read is revalidated). Consul caches health/service,
catalog/services, catalog/service, prepared-query execute and the discovery chain; those handlers
call :func:`cache_meta`.

``?peer=NAME`` on catalog and health reads: Beacon has no cluster peering, so no peer exists and the
answer is the endpoint's empty result (``[]``, ``{}`` or ``null``) with an index, never an error.
"""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from beacon.agent.http.core import AGENT_KEY, Reply

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

MAX_ENTRIES = 4096
# Parameters that do not change what a read returns.
_IGNORED = frozenset({"cached", "index", "wait", "stale", "consistent", "leader", "pretty", "token"})
_caches: weakref.WeakKeyDictionary[Any, dict[str, tuple[int, float]]] = weakref.WeakKeyDictionary()


def _max_age(req: web.Request) -> float | None:
    for part in req.headers.get("Cache-Control", "").split(","):
        name, _, value = part.strip().partition("=")
        if name.lower() == "max-age":
            try:
                return float(value)
            except ValueError:
                return None
    return None


def cache_meta(req: web.Request, agent: Agent, reply: Reply, index: int | None = None) -> Reply:
    """Add X-Cache/Age to ``reply`` when the request asked for ``?cached``."""
    if "cached" not in req.query:
        return reply
    idx = reply.index if index is None else index
    key = req.path + "?" + "&".join(f"{k}={v}" for k, v in sorted(req.query.items()) if k not in _IGNORED)
    cache = _caches.setdefault(agent, {})
    now = time.monotonic()
    entry = cache.get(key)
    max_age = _max_age(req)
    if reply.headers is None:
        reply.headers = {}
    if entry is not None and entry[0] == idx and (max_age is None or now - entry[1] <= max_age):
        reply.headers["X-Cache"] = "HIT"
        reply.headers["Age"] = str(int(now - entry[1]))
        return reply
    if len(cache) >= MAX_ENTRIES:
        cache.clear()
    cache[key] = (idx or 0, now)
    reply.headers["X-Cache"] = "MISS"
    return reply


def _peer_empty(path: str) -> Any:
    if path == "/v1/catalog/services":
        return {}
    if path.startswith("/v1/catalog/node/"):
        return None
    if path.startswith("/v1/catalog/node-services/"):
        return {"Node": None, "Services": []}
    return []


@web.middleware
async def peer_middleware(request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """``?peer=`` on a catalog or health read: no peer exists, so the empty result."""
    answer = peer_answer(request)
    return answer if answer is not None else await handler(request)


def peer_answer(request: web.Request) -> web.Response | None:
    """The answer to a catalog or health read with ``?peer=``, or None for any other request."""
    if (request.query_string and request.query.get("peer") and request.method in ("GET", "HEAD")
            and request.path.startswith(("/v1/catalog/", "/v1/health/"))
            and request.path != "/v1/catalog/datacenters"):
        agent = request.app[AGENT_KEY]
        headers = {"X-Consul-Index": "1",
                   "X-Consul-KnownLeader": "true" if agent.consensus.known_leader() else "false",
                   "X-Consul-LastContact": "0"}
        return web.Response(text=json.dumps(_peer_empty(request.path)), content_type="application/json",
                            headers=headers)
    return None
