"""/v1/connect/* and /v1/agent/connect/*: intentions over ``service-intentions`` config entries
(beacon.server.intentions), as Consul 1.9+ serves them, and the built-in CA
(beacon.server.connect_ca).

* ``GET /v1/connect/intentions`` lists every intention in evaluation order (``?filter``, blocking).
* ``GET|PUT|DELETE /v1/connect/intentions/exact?source=&destination=`` reads (404 "Intention not
  found"), upserts (body: ``Action`` or ``Permissions``, ``Description``) and deletes one pair.
* ``GET /v1/connect/intentions/match?by=source|destination&name=...`` answers ``{name: [...]}``.
* ``GET /v1/connect/intentions/check?source=&destination=`` answers ``{"Allowed": bool}``.
* ``POST /v1/agent/connect/authorize`` (``Target``, ``ClientCertURI``: a SPIFFE service URI) answers
  ``{"Authorized": bool, "Reason": ...}`` for a connection to ``Target``; client agents ask a server.

* ``GET /v1/connect/ca/roots`` and ``/v1/agent/connect/ca/roots`` (``?pem=true``: the PEM bundle),
  ``GET /v1/connect/ca/configuration``, ``GET /v1/agent/connect/ca/leaf/:service`` (blocking). The
  first of these on a datacenter makes its root. Client agents ask a server, which makes the leaf's
  key too (Consul's agent makes it itself and sends a CSR).

Together these are what a connect-native application uses (roots, its leaf, authorize). Beacon
runs no proxies. Legacy ID-based intentions, CA rotation and external CA providers are not served.
"""

from __future__ import annotations

import re
import time
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
from beacon.endpoints import connect_ca as ca_endpoint
from beacon.endpoints import intentions as intentions_endpoint
from beacon.server import config_entries as ce
from beacon.server import connect_ca
from beacon.server import intentions as ix

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

router = Router()
agent_router = Router()  # agent-local: every agent answers authorize (a client by asking a server)

WATCH = f"config:{ix.KIND}"
# spiffe://<trust domain>[/ap/<partition>]/ns/<namespace>/dc/<datacenter>/svc/<service>
_SPIFFE_SERVICE = re.compile(r"^spiffe://[^/]+(?:/ap/[^/]+)?/ns/[^/]+/dc/[^/]+/svc/([^/]+)$")


def _param(req: web.Request, name: str) -> str:
    value = req.query.get(name, "")
    if not value:
        raise HTTPError(400, f"required query parameter '{name}' not set")
    return value


def default_allow(agent: Agent) -> bool:
    """No intention matched: ACLs decide (disabled or default allow: allowed)."""
    return agent.acl is None or agent.acl.default_allow


def _read(agent: Agent, compute: Any) -> tuple[int, Any]:
    store = agent.store
    with store.lock:
        table = ce.rows(store)
        return store.tables.get(ce.TABLE, 0), compute(table)


@router.get("/v1/connect/intentions")
async def intention_list(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    idx, found = await blocking_query(agent, opts, [WATCH], lambda: _read(agent, ix.all_intentions))
    return Reply(apply_filter(opts, found), index=idx)


@router.get("/v1/connect/intentions/exact")
async def intention_get_exact(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    source, destination = _param(req, "source"), _param(req, "destination")
    idx, found = await blocking_query(agent, opts, [WATCH],
                                      lambda: _read(agent, lambda t: ix.exact(t, source, destination)))
    if found is None:
        raise HTTPError(404, "Intention not found")
    return Reply(found, index=idx)


@router.put("/v1/connect/intentions/exact")
async def intention_put_exact(req: web.Request, agent: Agent) -> Reply:
    query_options(req, agent)
    source, destination = _param(req, "source"), _param(req, "destination")
    body = await read_json(req)
    return Reply(await intentions_endpoint.upsert(agent.submit, agent.store, agent.config.datacenter,
                                                  source, destination, body))


@router.delete("/v1/connect/intentions/exact")
async def intention_delete_exact(req: web.Request, agent: Agent) -> Reply:
    query_options(req, agent)
    source, destination = _param(req, "source"), _param(req, "destination")
    return Reply(await intentions_endpoint.delete(agent.submit, agent.store, agent.config.datacenter,
                                                  source, destination))


@router.get("/v1/connect/intentions/match")
async def intention_match(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    by = _param(req, "by")
    if by not in ("source", "destination"):
        raise HTTPError(400, "'by' parameter must be one of 'source' or 'destination'")
    names = req.query.getall("name", [])
    if not names or not all(names):
        raise HTTPError(400, "required query parameter 'name' not set")
    idx, found = await blocking_query(
        agent, opts, [WATCH], lambda: _read(agent, lambda t: {n: ix.match(t, by, n) for n in names}))
    return Reply(found, index=idx)


@router.get("/v1/connect/intentions/check")
async def intention_check(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    source, destination = _param(req, "source"), _param(req, "destination")
    if req.query.get("source-type", "consul") != "consul":
        raise HTTPError(400, f"unsupported SourceType: {req.query['source-type']}")
    await agent.consistent_read(opts.stale, opts.consistent)
    _, (allowed, _ixn) = _read(agent, lambda t: ix.decide(t, source, destination, default_allow(agent)))
    return Reply({"Allowed": allowed})


# ---------------------------------------------------------------------- the built-in CA
async def _roots(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    await ca_endpoint.ensure_root(agent.submit, agent.store, agent.config.datacenter)
    idx, roots = await blocking_query(agent, opts, [connect_ca.WATCH_KEY], lambda: _locked(agent, connect_ca.roots_view))
    if req.query.get("pem", "").lower() in ("1", "true"):
        return Reply("".join(r["RootCert"] for r in roots["Roots"]), raw=True, index=idx,
                     content_type="application/pem-certificate-chain")
    return Reply(roots, index=idx)


def _locked(agent: Agent, fn: Any) -> Any:
    with agent.store.lock:
        return fn(agent.store)


router.add("GET", "/v1/connect/ca/roots", _roots)
agent_router.add("GET", "/v1/agent/connect/ca/roots", _roots)


@router.get("/v1/connect/ca/configuration")
async def ca_configuration(req: web.Request, agent: Agent) -> Reply:
    query_options(req, agent)
    await ca_endpoint.ensure_root(agent.submit, agent.store, agent.config.datacenter)
    return Reply(_locked(agent, connect_ca.configuration))


@router.put("/v1/connect/ca/configuration")
async def ca_set_configuration(req: web.Request, agent: Agent) -> Reply:
    query_options(req, agent)
    raise HTTPError(400, "Beacon's built-in Connect CA cannot be reconfigured or rotated (provider \"consul\", "
                         "its defaults)")


@agent_router.get("/v1/agent/connect/ca/leaf/{service}")
async def ca_leaf(req: web.Request, agent: Agent) -> Reply:
    """A leaf for the service, kept and handed out again until half its lifetime is gone or the root
    changed (Consul's agent caches it likewise); ``?index`` blocks until a newer one."""
    opts = query_options(req, agent)
    service = req.match_info["service"]
    await ca_endpoint.ensure_root(agent.submit, agent.store, agent.config.datacenter)

    def read() -> tuple[int, dict[str, Any]]:
        leaf = _current_leaf(agent, service)
        return leaf["ModifyIndex"], {k: v for k, v in leaf.items() if k not in ("RootID", "_renew_at")}

    idx, leaf = await blocking_query(agent, opts, [connect_ca.WATCH_KEY], read)
    return Reply(leaf, index=idx)


def _current_leaf(agent: Agent, service: str) -> dict[str, Any]:
    now = time.time()
    cached = agent.leaf_certs.get(service)
    with agent.store.lock:
        root = connect_ca.active_root(agent.store)
        index = agent.store.index
    if cached is not None and root is not None and cached["RootID"] == root["ID"] and now < cached["_renew_at"]:
        return cached
    index = max(index, cached["ModifyIndex"] + 1 if cached else 0)
    leaf = connect_ca.sign_leaf(agent.store, agent.config.datacenter, service, index)
    lifetime = connect_ca.LEAF_TTL.total_seconds()
    leaf["_renew_at"] = now + lifetime / 2
    agent.leaf_certs[service] = leaf
    return leaf


@agent_router.put("/v1/agent/connect/authorize")  # and POST, which Consul documents
async def connect_authorize(req: web.Request, agent: Agent) -> Reply:
    body = await read_json(req)
    if not isinstance(body, dict):
        raise HTTPError(400, "Request decode failed: body must be a JSON object")
    fields = {str(k).lower(): v for k, v in body.items()}
    target, uri = fields.get("target") or "", fields.get("clientcerturi") or ""
    if not isinstance(target, str) or not target:
        raise HTTPError(400, "Target service must be specified")
    if not isinstance(uri, str) or not uri:
        raise HTTPError(400, "ClientCertURI must be specified")
    if not uri.startswith("spiffe://"):
        raise HTTPError(400, "ClientCertURI not a valid Connect identifier")
    m = _SPIFFE_SERVICE.match(uri)
    if m is None:
        raise HTTPError(400, "ClientCertURI must be a valid Service identifier")
    source = m.group(1)
    _, (allowed, ixn) = _read(agent, lambda t: ix.decide(t, source, target, default_allow(agent)))
    if ixn is None:
        reason = ("ACLs disabled, access is allowed by default" if agent.acl is None
                  else "Default behavior configured by ACLs")
    elif ixn.get("Permissions"):
        reason = (f"Matched L7 intention: {ixn['SourceName']} => {ixn['DestinationName']} (Precedence: "
                  f"{ixn['Precedence']}); its permissions need an L7 request, not an L4 connection")
    else:
        reason = (f"Matched intention: {ixn['Action'].upper()} {ixn['SourceName']} => {ixn['DestinationName']} "
                  f"(ID: {ixn['ID']}, Precedence: {ixn['Precedence']})")
    return Reply({"Authorized": allowed, "Reason": reason})
