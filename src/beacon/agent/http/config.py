"""/v1/config (config entries) and /v1/discovery-chain/:service.

Shapes follow Consul: ``PUT /v1/config`` answers ``true``/``false`` (``?cas``); a read answers the
entry object with ``CreateIndex``/``ModifyIndex``; a list answers an array; ``DELETE`` answers ``{}``,
or ``true``/``false`` with ``?cas``. Reads are blocking queries. The discovery chain answers
``{"Chain": {...}}`` (GET, or POST with ``OverrideProtocol``/``OverrideConnectTimeout``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from beacon.agent.http.core import (
    HTTPError,
    Reply,
    Router,
    apply_filter,
    blocking_query,
    query_options,
    read_json,
)
from beacon.agent.http.decode import Fields
from beacon.agent.http.readopts import cache_meta
from beacon.endpoints import config as config_endpoint
from beacon.server import config_entries as ce
from beacon.server.discovery_chain import ChainError, compile_chain

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

router = Router()


def _cas(req: web.Request) -> int | None:
    if "cas" not in req.query:
        return None
    try:
        value = int(req.query["cas"])
        if value < 0:
            raise ValueError
        return value
    except ValueError:
        raise HTTPError(400, "Invalid cas value") from None


def _kind(req: web.Request) -> str:
    kind = req.match_info.get("kind", "").lower()
    if kind not in ce.KINDS:
        raise HTTPError(400, f"invalid config entry kind: {req.match_info.get('kind', '')}")
    return kind


async def config_apply(req: web.Request, agent: Agent) -> Reply:
    query_options(req, agent)
    try:
        entry = ce.decode(await read_json(req))
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        # A value of the wrong JSON type somewhere inside (a string where an object belongs).
        raise HTTPError(400, f"Request decode failed: {exc}") from None
    return Reply(await config_endpoint.set_entry(agent.submit, agent.store, agent.config.datacenter, entry,
                                                 _cas(req)))


async def config_get(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    kind, name = _kind(req), req.match_info["name"]
    store = agent.store

    def read() -> tuple[int, dict[str, Any] | None]:
        with store.lock:
            found = ce.get(store, kind, name)
            return (found["ModifyIndex"] if found else store.tables.get(ce.TABLE, 0)), found

    idx, found = await blocking_query(agent, opts, [f"config:{kind}/{name}"], read)
    if found is None:
        raise HTTPError(404, f"Config entry not found for \"{kind}\" / \"{name}\"")
    return Reply(found, index=idx)


async def config_list(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    kind = _kind(req)
    store = agent.store

    def read() -> tuple[int, list[dict[str, Any]]]:
        with store.lock:
            found = [e for e in ce.rows(store).values() if e["Kind"] == kind]
            return store.tables.get(ce.TABLE, 0), sorted(found, key=lambda e: e["Name"])

    idx, found = await blocking_query(agent, opts, [f"config:{kind}"], read)
    return Reply(apply_filter(opts, found), index=idx)


async def config_delete(req: web.Request, agent: Agent) -> Reply:
    query_options(req, agent)
    kind, name = _kind(req), req.match_info["name"]
    cas = _cas(req)
    deleted = await config_endpoint.delete(agent.submit, agent.store, agent.config.datacenter, kind, name, cas)
    return Reply(bool(deleted) if cas is not None else {})


async def discovery_chain(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    service = req.match_info["service"]
    dc = req.query.get("compile-dc") or agent.config.datacenter
    overrides = Fields({})
    if req.method == "POST":
        body = await read_json(req, required=False)
        overrides = Fields(body if body is not None else {})
    store = agent.store

    def read() -> tuple[int, dict[str, Any]]:
        with store.lock:
            table = dict(ce.rows(store))
            idx = store.tables.get(ce.TABLE, 0)
        try:
            chain = compile_chain(table, service, dc, overrides.str("OverrideProtocol"),
                                  overrides.str("OverrideConnectTimeout"))
        except ChainError as exc:
            raise HTTPError(500, str(exc)) from None
        return max(idx, 1), chain

    idx, chain = await blocking_query(agent, opts, [ce.TABLE], read)
    return cache_meta(req, agent, Reply({"Chain": chain}, index=idx))


router.add("PUT", "/v1/config", config_apply)
router.add("GET", "/v1/config/{kind}", config_list)
router.add("GET", "/v1/config/{kind}/{name}", config_get)
router.add("DELETE", "/v1/config/{kind}/{name}", config_delete)
router.add("GET", "/v1/discovery-chain/{service}", discovery_chain)
router.add("POST", "/v1/discovery-chain/{service}", discovery_chain)
