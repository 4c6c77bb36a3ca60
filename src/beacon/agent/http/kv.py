"""/v1/kv/*: the KV store."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web

from beacon.agent.http.core import HTTPError, Reply, Router, blocking_query, flag, query_options
from beacon.agent.http.views import views_of
from beacon.endpoints import kv as kv_endpoint
from beacon.numbers import UINT64_MAX

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

router = Router()


def _uint(req: web.Request, name: str, what: str) -> int:
    try:
        v = int(req.query[name])
        if not 0 <= v <= UINT64_MAX:
            raise ValueError
        return v
    except ValueError:
        raise HTTPError(400, f"Invalid {what}") from None


async def kv_get(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    key = req.match_info.get("key", "")
    store = agent.store
    recurse = flag(req, "recurse")
    keys_only = flag(req, "keys")
    if not key and not (recurse or keys_only):
        raise HTTPError(400, "Missing key name")
    if keys_only:
        sep = req.query.get("separator", req.query.get("seperator", ""))
        idx, keys = await blocking_query(agent, opts, [], lambda: store.kv_list_keys(key, sep), prefixes=[key])
        if not keys and key:
            return Reply(None, status=404, index=idx, empty=True)
        return Reply(keys, index=idx)
    views = views_of(agent)
    if recurse:
        idx, listing = await blocking_query(agent, opts, [], lambda: views.kv_recurse(key), prefixes=[key])
        if not listing.value:
            return Reply(None, status=404, index=idx, empty=True)
        return Reply(listing, index=idx)
    if flag(req, "raw"):
        idx, entry = await blocking_query(agent, opts, ["kv:" + key], lambda: store.kv_get(key))
        if entry is None:
            return Reply(None, status=404, index=idx, empty=True)
        return Reply(entry.value or b"", index=idx, raw=True, content_type="text/plain",
                     headers={"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"})
    idx, body = await blocking_query(agent, opts, ["kv:" + key], lambda: views.kv_entry(key))
    if body is None:
        return Reply(None, status=404, index=idx, empty=True)
    return Reply(body, index=idx)


async def kv_put(req: web.Request, agent: Agent) -> Reply:
    key = req.match_info.get("key", "")
    if not key:
        raise HTTPError(400, "Missing key name")
    query_options(req, agent)
    limit = agent.config.kv_max_value_size
    if req.content_length is not None and req.content_length > limit:
        raise HTTPError(413, f"Request body({req.content_length} bytes) too large, max size: {limit} bytes. "
                        "See the kv_max_value_size limit.")
    value = await req.read()
    if len(value) > limit:
        raise HTTPError(413, f"Request body({len(value)} bytes) too large, max size: {limit} bytes. "
                        "See the kv_max_value_size limit.")
    if not req.query_string:  # a plain set: no query to parse
        return Reply(await kv_endpoint.put(agent.submit, key, value if value else None))
    given = [n for n in ("cas", "acquire", "release") if n in req.query]
    if len(given) > 1:
        raise HTTPError(400, "Conflicting flags: " + "&".join(f"{n}=" for n in given))
    flags = _uint(req, "flags", "flags") if "flags" in req.query else 0
    cas = _uint(req, "cas", "cas value") if "cas" in req.query else None
    return Reply(await kv_endpoint.put(agent.submit, key, value if value else None, flags, cas=cas,
                                       acquire=req.query.get("acquire"), release=req.query.get("release"),
                                       now=time.time()))


async def kv_delete(req: web.Request, agent: Agent) -> Reply:
    key = req.match_info.get("key", "")
    query_options(req, agent)
    recurse = flag(req, "recurse")
    if recurse and "cas" in req.query:
        raise HTTPError(400, "Conflicting flags: cas=&recurse")
    if not key and not recurse:
        raise HTTPError(400, "Missing key name")
    cas = _uint(req, "cas", "cas value") if "cas" in req.query and not recurse else None
    return Reply(await kv_endpoint.delete(agent.submit, key, recurse=recurse, cas=cas))


for _path in ("/v1/kv/", "/v1/kv/{key:.+}"):
    router.add("GET", _path, kv_get)
    router.add("PUT", _path, kv_put)
    router.add("DELETE", _path, kv_delete)
