"""/v1/query: prepared queries (create, list, read, update, delete, execute, explain).

Request bodies are decoded with Consul's leniency (case-insensitive keys, snake_case), so py-consul's
lowercase bodies and the Go client's PascalCase ones both work; replies use Consul's shapes. The
state, lookup, templates and execution live in :mod:`beacon.server.queries`.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from beacon.agent.http.core import HTTPError, Reply, Router, blocking_query, query_options, read_json
from beacon.agent.http.decode import DecodeError, Fields
from beacon.agent.http.encode import catalog_service_json, check_json, node_json
from beacon.agent.http.readopts import cache_meta
from beacon.endpoints import query as query_endpoint
from beacon.server import queries

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

router = Router()

# A client agent forwarding an execute names itself here, so "_agent" means the client's node.
AGENT_NODE_HEADER = "X-Beacon-Agent-Node"
NOT_FOUND = "Query not found"


def _sub(f: Fields, name: str) -> Fields:
    value = f.get(name)
    return Fields(value if value is not None else {}, name)


def _list_or_none(f: Fields, name: str) -> list[str] | None:
    return f.str_list(name) if f.get(name) is not None else None


def decode_query(obj: Any, qid: str) -> dict[str, Any]:
    """A request body -> the stored shape (every field Consul returns, with its defaults)."""
    f = Fields(obj)
    tmpl, svc, dns = _sub(f, "Template"), _sub(f, "Service"), _sub(f, "DNS")
    failover = _sub(svc, "Failover")
    connect = _sub(svc, "Connect")
    ttl = dns.get("TTL")
    if ttl is not None and not isinstance(ttl, str):
        raise DecodeError("Request decode failed: DNS.TTL must be a duration string")
    return {
        "ID": qid,
        "Name": f.str("Name"),
        "Session": f.str("Session"),
        "Token": f.str("Token"),
        "Template": {"Type": tmpl.str("Type"), "Regexp": tmpl.str("Regexp"),
                     "RemoveEmptyTags": tmpl.bool("RemoveEmptyTags")},
        "Service": {
            "Service": svc.str("Service"),
            "Failover": {"NearestN": failover.int("NearestN"),
                         "Datacenters": _list_or_none(failover, "Datacenters")},
            "IgnoreCheckIDs": _list_or_none(svc, "IgnoreCheckIDs"),
            "OnlyPassing": svc.bool("OnlyPassing"),
            "Near": svc.str("Near"),
            "Tags": _list_or_none(svc, "Tags"),
            "NodeMeta": svc.str_map("NodeMeta") or None,
            "ServiceMeta": svc.str_map("ServiceMeta") or None,
            "Connect": {"Enabled": connect.bool("Enabled")},
            "Peer": svc.str("Peer"),
            "SamenessGroup": svc.str("SamenessGroup"),
        },
        "DNS": {"TTL": ttl or ""},
    }


async def query_create(req: web.Request, agent: Agent) -> Reply:
    query_options(req, agent)
    qid = await query_endpoint.set_query(agent.submit, decode_query(await read_json(req), str(uuid.uuid4())))
    return Reply({"ID": qid})


async def query_list(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    store = agent.store

    def read() -> tuple[int, list[dict[str, Any]]]:
        with store.lock:
            return store.tables.get(queries.TABLE, 0), queries.live(store)

    idx, found = await blocking_query(agent, opts, [queries.TABLE], read)
    return Reply(found, index=idx)


def _query_id(req: web.Request) -> str:
    return req.match_info.get("id", "")


async def query_get(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    ident = _query_id(req)
    store = agent.store

    def read() -> tuple[int, dict[str, Any] | None]:
        found = queries.lookup(store, ident)
        if found is None or (found["ID"] != ident and found["Name"] != ident):
            return store.tables.get(queries.TABLE, 0), None
        return found["ModifyIndex"], found

    idx, found = await blocking_query(agent, opts, [queries.TABLE], read)
    if found is None:
        raise HTTPError(404, NOT_FOUND)
    return Reply([found], index=idx)


def _stored_id(agent: Agent, ident: str, verb: str) -> str:
    with agent.store.lock:
        for q in queries.live(agent.store):
            if q["ID"] == ident or (q["Name"] and q["Name"] == ident):
                return str(q["ID"])
    raise HTTPError(500, f"Cannot {verb} non-existent prepared query: '{ident}'")


async def query_update(req: web.Request, agent: Agent) -> Reply:
    query_options(req, agent)
    qid = _stored_id(agent, _query_id(req), "modify")
    await query_endpoint.set_query(agent.submit, decode_query(await read_json(req), qid))
    return Reply(empty=True)


async def query_delete(req: web.Request, agent: Agent) -> Reply:
    query_options(req, agent)
    qid = _stored_id(agent, _query_id(req), "delete")
    await query_endpoint.delete(agent.submit, qid)
    return Reply(empty=True)


def _resolve(agent: Agent, ident: str) -> dict[str, Any]:
    found = queries.resolve(agent.store, ident)
    if found is None:
        raise HTTPError(404, NOT_FOUND)
    return found


def _query_meta(req: web.Request, agent: Agent, index: int) -> dict[str, Any]:
    """Consul's execute and explain replies embed its QueryMeta struct, so its fields appear in the body."""
    mode = "stale" if "stale" in req.query else "consistent" if "consistent" in req.query else "leader"
    return {"Index": max(1, index), "LastContact": agent.consensus.last_contact_ms() * 1_000_000,
            "KnownLeader": agent.consensus.known_leader(), "ConsistencyLevel": mode, "NotModified": False,
            "Backend": 0}


def encode_instance(inst: queries.Instance) -> dict[str, Any]:
    node, svc, checks = inst
    return {"Node": node_json(node), "Service": catalog_service_json(svc), "Checks": [check_json(c) for c in checks]}


async def query_execute(req: web.Request, agent: Agent) -> Reply:
    query_options(req, agent)
    await agent.consistent_read("stale" in req.query, "consistent" in req.query)
    query = _resolve(agent, _query_id(req))
    limit = 0
    if req.query.get("limit"):
        try:
            limit = int(req.query["limit"])
        except ValueError:
            raise HTTPError(400, "Bad limit") from None
    agent_node = req.headers.get(AGENT_NODE_HEADER) or agent.config.node_name
    idx, body = queries.execute(agent.store, query, agent_node, agent.config.datacenter,
                                near=req.query.get("near", ""), limit=limit, encode=encode_instance)
    body["PeerName"] = ""  # no cluster peering: results always come from the local datacenter
    body.update(_query_meta(req, agent, idx))
    return cache_meta(req, agent, Reply(body, index=idx))


async def query_explain(req: web.Request, agent: Agent) -> Reply:
    query_options(req, agent)
    query = _resolve(agent, _query_id(req))
    index = max(1, query["ModifyIndex"])
    return Reply({"Query": query, **_query_meta(req, agent, index)}, index=index)


router.add("GET", "/v1/query", query_list)
router.add("POST", "/v1/query", query_create)
router.add("GET", "/v1/query/{id}", query_get)
router.add("PUT", "/v1/query/{id}", query_update)
router.add("DELETE", "/v1/query/{id}", query_delete)
router.add("GET", "/v1/query/{id}/execute", query_execute)
router.add("GET", "/v1/query/{id}/explain", query_explain)
