"""/v1/health/*: checks and instances with their health, blocking."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from beacon.agent.http.catalog import has_tags, meta_matches, node_meta_filter
from beacon.agent.http.core import (
    HTTPError,
    Reply,
    Router,
    apply_filter,
    blocking_query,
    parse_bool,
    query_options,
)
from beacon.agent.http.encode import catalog_service_json, check_json, node_json
from beacon.agent.http.readopts import cache_meta

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

router = Router()


@router.get("/v1/health/node/{node:.+}")
async def health_node(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    name = req.match_info["node"]

    def read() -> tuple[int, list[dict[str, Any]]]:
        idx, checks = agent.store.node_checks(name)
        return idx, [check_json(c) for c in checks]

    idx, items = await blocking_query(agent, opts, ["node:" + name.lower()], read)
    return Reply(apply_filter(opts, items), index=idx)


@router.get("/v1/health/node/")
async def health_node_missing(req: web.Request, agent: Agent) -> Reply:
    raise HTTPError(400, "Missing node name")


@router.get("/v1/health/checks/{service:.+}")
async def health_checks(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    name = req.match_info["service"]
    meta = node_meta_filter(req)
    store = agent.store

    def read() -> tuple[int, list[dict[str, Any]]]:
        idx, checks = store.service_checks(name)
        out = []
        for c in checks:
            node = store.get_node(c.node)
            if node is not None and meta_matches(node, meta):
                out.append(check_json(c))
        return idx, out

    idx, items = await blocking_query(agent, opts, ["svc:" + name.lower()], read)
    return Reply(apply_filter(opts, items), index=idx)


@router.get("/v1/health/service/{service:.+}")
async def health_service(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    name = req.match_info["service"]
    tags = req.query.getall("tag", [])
    meta = node_meta_filter(req)
    passing = False
    if "passing" in req.query:
        passing = parse_bool(req.query["passing"], "?passing")

    def read() -> tuple[int, list[dict[str, Any]]]:
        idx, rows = agent.store.health_service(name)
        out = []
        for node, svc, checks in rows:
            if not has_tags(svc.tags, tags) or not meta_matches(node, meta):
                continue
            if passing and any(c.status != "passing" for c in checks):
                continue
            out.append({"Node": node_json(node), "Service": catalog_service_json(svc),
                        "Checks": [check_json(c) for c in checks]})
        return idx, out

    idx, items = await blocking_query(agent, opts, ["svc:" + name.lower()], read)
    return cache_meta(req, agent, Reply(apply_filter(opts, items), index=idx))


@router.get("/v1/health/state/{state}")
async def health_state(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    state = req.match_info["state"]
    if state not in ("any", "passing", "warning", "critical"):
        raise HTTPError(400, "Invalid check state")
    meta = node_meta_filter(req)
    store = agent.store

    def read() -> tuple[int, list[dict[str, Any]]]:
        idx, checks = store.checks_in_state(state)
        out = []
        for c in checks:
            node = store.get_node(c.node)
            if not meta or (node is not None and meta_matches(node, meta)):
                out.append(check_json(c))
        return idx, out

    idx, items = await blocking_query(agent, opts, ["checks"], read)
    return Reply(apply_filter(opts, items), index=idx)


@router.get("/v1/health/state/")
async def health_state_missing(req: web.Request, agent: Agent) -> Reply:
    raise HTTPError(400, "Missing check state")
