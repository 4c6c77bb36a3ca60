"""/v1/health/*: checks and instances with their health, blocking."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from beacon.agent.http.catalog import has_tags, meta_matches, meta_matches_json, node_meta_filter
from beacon.agent.http.coordinate import sort_near
from beacon.agent.http.core import (
    HTTPError,
    Reply,
    Router,
    apply_filter,
    blocking_query,
    parse_bool,
    query_options,
)
from beacon.agent.http.encode import check_json
from beacon.agent.http.readopts import cache_meta
from beacon.agent.http.views import views_of

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

    views = views_of(agent)

    def read() -> tuple[int, Any]:
        idx, listing = views.health_service(name, passing)
        if not tags and not meta and opts.filter is None:
            return idx, listing  # the shared view, bytes included
        return idx, apply_filter(opts, [e for e in listing.value if has_tags(e["Service"]["Tags"], tags)
                                        and meta_matches_json(e["Node"]["Meta"], meta)])

    idx, body = await blocking_query(agent, opts, ["svc:" + name.lower()], read)
    body = await sort_near(req, agent, body, lambda e: e["Node"]["Node"])
    return cache_meta(req, agent, Reply(body, index=idx))


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
