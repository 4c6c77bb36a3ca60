"""/v1/catalog/*: the server's catalog, Raft-indexed, blocking."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from beacon.agent.http.coordinate import sort_near
from beacon.agent.http.core import (
    HTTPError,
    Reply,
    Router,
    apply_filter,
    blocking_query,
    query_options,
    read_json,
)
from beacon.agent.http.decode import DecodeError, Fields, validate_meta
from beacon.agent.http.encode import catalog_service_json, node_json, service_node_json
from beacon.agent.http.readopts import cache_meta
from beacon.agent.http.views import views_of
from beacon.endpoints import catalog as catalog_endpoint
from beacon.model import Node

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

router = Router()


def node_meta_filter(req: web.Request) -> list[tuple[str, str]]:
    out = []
    for item in req.query.getall("node-meta", []):
        k, _, v = item.partition(":")
        out.append((k, v))
    return out


def meta_matches(node: Node, wanted: list[tuple[str, str]]) -> bool:
    return all(node.meta.get(k) == v for k, v in wanted)


def meta_matches_json(meta: dict[str, str], wanted: list[tuple[str, str]]) -> bool:
    return all(meta.get(k) == v for k, v in wanted)


def has_tags(tags: list[str], wanted: list[str]) -> bool:
    low = {t.lower() for t in tags}
    return all(w.lower() in low for w in wanted)


@router.put("/v1/catalog/register")
async def catalog_register(req: web.Request, agent: Agent) -> Reply:
    f = Fields(await read_json(req))
    node, address, skip_node_update = f.str("Node"), f.str("Address"), f.bool("SkipNodeUpdate")
    catalog_endpoint.check_node(node, address, skip_node_update)
    node_meta = f.str_map("NodeMeta")
    validate_meta(node_meta, "Node")
    service: dict[str, Any] | None = None
    svc = f.obj("Service")
    if svc is not None:
        from beacon.agent.http.decode import decode_service

        raw = dict(svc.raw)
        if not Fields(raw).str("Name") and Fields(raw).str("Service"):
            raw["Name"] = Fields(raw).str("Service")
        try:
            decoded, _ = decode_service(raw)
        except DecodeError as exc:
            raise HTTPError(500, str(exc)) from None
        service = decoded.to_dict()
    checks = []
    raw_checks = []
    if f.get("Check") is not None:
        raw_checks.append(f.get("Check"))
    raw_checks += f.list("Checks")
    for rc in raw_checks:
        cf = Fields(rc, "Check")
        status = cf.str("Status") or "critical"
        if status not in ("passing", "warning", "critical"):
            raise HTTPError(500, f"Invalid check status: '{status}'")
        definition = cf.get("Definition") or {}
        checks.append({"check_id": cf.str("CheckID", "ID") or cf.str("Name"), "name": cf.str("Name"),
                       "status": status, "notes": cf.str("Notes"), "output": cf.str("Output"),
                       "service_id": cf.str("ServiceID"), "type": cf.str("Type"),
                       "definition": definition if isinstance(definition, dict) else {}})
    await catalog_endpoint.register(
        agent.submit, node=node, address=address, node_id=f.str("ID"),
        datacenter=f.str("Datacenter") or agent.config.datacenter, tagged_addresses=f.str_map("TaggedAddresses"),
        node_meta=node_meta, skip_node_update=skip_node_update, service=service, checks=checks)
    return Reply(True)


@router.put("/v1/catalog/deregister")
async def catalog_deregister(req: web.Request, agent: Agent) -> Reply:
    f = Fields(await read_json(req))
    await catalog_endpoint.deregister(agent.submit, f.str("Node"), f.str("ServiceID"), f.str("CheckID"))
    return Reply(True)


@router.get("/v1/catalog/datacenters")
async def catalog_datacenters(req: web.Request, agent: Agent) -> Reply:
    from beacon.agent.http.federation import datacenters

    return Reply(await datacenters(agent))  # nearest first by the WAN pool's coordinates


@router.get("/v1/catalog/nodes")
async def catalog_nodes(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    meta = node_meta_filter(req)
    views = views_of(agent)

    def read() -> tuple[int, Any]:
        idx, listing = views.catalog_nodes()
        if not meta and opts.filter is None:
            return idx, listing  # the shared view, bytes included
        return idx, apply_filter(opts, [n for n in listing.value if meta_matches_json(n["Meta"], meta)])

    idx, body = await blocking_query(agent, opts, ["nodes"], read)
    return Reply(await sort_near(req, agent, body, lambda n: n["Node"]), index=idx)


@router.get("/v1/catalog/services")
async def catalog_services(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    meta = node_meta_filter(req)
    store = agent.store

    def read() -> tuple[int, Any]:
        if not meta and opts.filter is None:
            return views_of(agent).catalog_services()
        with store.lock:
            out: dict[str, list[str]] = {}
            for (node_key, _), svc in sorted(store.services.items()):
                node = store.nodes[node_key]
                if not meta_matches(node, meta):
                    continue
                if opts.filter is not None and not opts.filter(service_node_json(node, svc)):
                    continue
                tags = out.setdefault(svc.service, [])
                tags += [t for t in svc.tags if t not in tags]
            return store.tables["services"], dict(sorted(out.items()))

    idx, items = await blocking_query(agent, opts, ["services", "nodes"], read)
    return cache_meta(req, agent, Reply(items, index=idx))


@router.get("/v1/catalog/service/{name:.+}")
async def catalog_service(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    name = req.match_info["name"]
    tags = req.query.getall("tag", [])
    meta = node_meta_filter(req)

    def read() -> tuple[int, list[dict[str, Any]]]:
        idx, rows = agent.store.service_nodes(name)
        return idx, [service_node_json(n, s) for n, s in rows
                     if has_tags(s.tags, tags) and meta_matches(n, meta)]

    idx, items = await blocking_query(agent, opts, ["svc:" + name.lower()], read)
    items = await sort_near(req, agent, apply_filter(opts, items), lambda s: s["Node"])
    return cache_meta(req, agent, Reply(items, index=idx))


@router.get("/v1/catalog/node/{node:.+}")
async def catalog_node(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    name = req.match_info["node"]

    def read() -> tuple[int, Any]:
        idx, node, services = agent.store.node_services(name)
        if node is None:
            return idx, None
        svcs = {s.id: catalog_service_json(s) for s in services}
        if opts.filter is not None:
            svcs = {k: v for k, v in svcs.items() if opts.filter(v)}
        return idx, {"Node": node_json(node), "Services": svcs}

    idx, body = await blocking_query(agent, opts, ["node:" + name.lower()], read)
    return Reply(body, index=idx)


@router.get("/v1/catalog/node-services/{node:.+}")
async def catalog_node_services(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    name = req.match_info["node"]

    def read() -> tuple[int, Any]:
        idx, node, services = agent.store.node_services(name)
        svcs = apply_filter(opts, [catalog_service_json(s) for s in services])
        return idx, {"Node": node_json(node) if node else None, "Services": svcs}

    idx, body = await blocking_query(agent, opts, ["node:" + name.lower()], read)
    return Reply(body, index=idx)
