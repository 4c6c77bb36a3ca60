"""ACL enforcement for the HTTP API, in one middleware with one route -> rule table.

Every ``/v1`` request's token (``X-Consul-Token``, ``Authorization: Bearer``, ``?token=``; none means
the agent's default token, else anonymous) is resolved to an :class:`~beacon.acl.resolver.Identity`,
then the first entry of :data:`TABLE` whose method and path pattern match decides:

* a **gate** checks one permission before the handler runs (403 with Consul's message if missing);
* a **filter** runs the handler and drops from its JSON reply what the token may not read, setting
  ``X-Consul-Results-Filtered-By-ACLs: true`` when something was dropped (KV recurse/keys per key,
  catalog, health, agent, session and event lists per item).

Routes the table does not name need a management token. The table is the one place that knows
which rule guards which route, so the later endpoint layer (issue 14) can replace it wholesale.
On client agents, routes forwarded to servers are enforced there; only agent-local routes here.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from beacon.acl.authorizer import Authorizer
from beacon.acl.resolver import ACLNotFound, ACLUnavailable, Identity
from beacon.acl.rules import READ, WRITE
from beacon.agent.http.acl import IDENTITY_KEY
from beacon.agent.http.core import AGENT_KEY, encode_compact, encode_pretty

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

SECRET_KEY = "beacon.acl.secret"
FILTERED = "X-Consul-Results-Filtered-By-ACLs"
Next = Callable[[web.Request], Awaitable[web.StreamResponse]]
Rule = Callable[[web.Request, "Agent", Authorizer, Next], Awaitable[web.StreamResponse]]


class Denied(Exception):
    def __init__(self, perm: str, name: str | None = None) -> None:
        super().__init__(perm)
        self.perm = perm
        self.name = name


def token_of(request: web.Request) -> str:
    tok = request.headers.get("X-Consul-Token", "")
    if not tok:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            tok = auth[7:].strip()
    return tok or request.query.get("token", "")


def _denied(ident: Identity, exc: Denied) -> web.Response:
    who = "anonymous token" if ident.accessor == "00000000-0000-0000-0000-000000000002" \
        else f"token with AccessorID '{ident.accessor}'"
    on = f" on \"{exc.name}\"" if exc.name is not None else ""
    return web.Response(status=403, text=f"Permission denied: {who} lacks permission '{exc.perm}'{on}",
                        content_type="text/plain")


def _need(ok: bool, perm: str, name: str | None = None) -> None:
    if not ok:
        raise Denied(perm, name)


# ---------------------------------------------------------------------- reply filtering
async def _filtered(request: web.Request, agent: Agent, nxt: Next,
                    keep: Callable[[Any], Any]) -> web.StreamResponse:
    """Run the handler; replace its JSON body with keep(body), which returns (new body, dropped?)."""
    resp = await nxt(request)
    if resp.status != 200 or not isinstance(resp, web.Response) or resp.content_type != "application/json" \
            or not isinstance(resp.body, bytes | bytearray) or not resp.body:
        return resp
    body = orjson.loads(resp.body)
    new, dropped = keep(body)
    if not dropped:
        return resp
    headers = {k: v for k, v in resp.headers.items() if k.lower() not in ("content-length", "content-type")}
    headers[FILTERED] = "true"
    if new in ([], {}) and request.path.startswith("/v1/kv/"):
        return web.Response(status=404, headers=headers)  # Consul: nothing readable is "not found"
    pretty = agent.config.dev or "pretty" in request.query
    data = encode_pretty(new) if pretty else encode_compact(new)
    return web.Response(status=200, body=data, headers=headers, content_type="application/json")


def _keep_list(ok: Callable[[Any], bool]) -> Callable[[Any], tuple[Any, bool]]:
    def keep(body: Any) -> tuple[Any, bool]:
        if isinstance(body, list):
            new = [x for x in body if ok(x)]
            return new, len(new) != len(body)
        if isinstance(body, dict):
            newd = {k: v for k, v in body.items() if ok((k, v))}
            return newd, len(newd) != len(body)
        return body, False
    return keep


def _get(obj: Any, *path: str) -> str:
    for p in path:
        obj = obj.get(p) if isinstance(obj, dict) else None
    return obj if isinstance(obj, str) else ""


def _check_ok(a: Authorizer, chk: Any) -> bool:
    svc = _get(chk, "ServiceName")
    return a.node_read(_get(chk, "Node")) and (not svc or a.service_read(svc))


# ---------------------------------------------------------------------- rules
def gate(check: Callable[[web.Request, Agent, Authorizer], Awaitable[None] | None]) -> Rule:
    async def rule(request: web.Request, agent: Agent, a: Authorizer, nxt: Next) -> web.StreamResponse:
        result = check(request, agent, a)
        if result is not None:
            await result
        return await nxt(request)
    return rule


def filtered(make: Callable[[web.Request, Agent, Authorizer], Callable[[Any], tuple[Any, bool]]]) -> Rule:
    async def rule(request: web.Request, agent: Agent, a: Authorizer, nxt: Next) -> web.StreamResponse:
        return await _filtered(request, agent, nxt, make(request, agent, a))
    return rule


def _tail(request: web.Request, prefix: str) -> str:
    return request.path[len(prefix):]


async def _body(request: web.Request) -> Any:
    raw = await request.read()  # aiohttp keeps the bytes: the handler reads them again
    try:
        return orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        return {}  # the handler answers the decode error


def _field(doc: Any, name: str) -> Any:
    if not isinstance(doc, dict):
        return None
    for k, v in doc.items():
        if k.lower() == name.lower():
            return v
    return None


def kv_get(request: web.Request, agent: Agent, a: Authorizer, nxt: Next) -> Awaitable[web.StreamResponse]:
    key = _tail(request, "/v1/kv/")
    if "keys" in request.query:
        return _filtered(request, agent, nxt, _keep_list(lambda k: isinstance(k, str) and a.key_read(k)))
    if "recurse" in request.query:
        return _filtered(request, agent, nxt, _keep_list(lambda e: a.key_read(_get(e, "Key"))))
    _need(a.key_read(key), "key:read", key)
    return nxt(request)


def kv_write(request: web.Request, agent: Agent, a: Authorizer) -> None:
    key = _tail(request, "/v1/kv/")
    if request.method == "DELETE" and "recurse" in request.query:
        _need(a.key_write_prefix(key), "key:write", key)
    else:
        _need(a.key_write(key), "key:write", key)


async def catalog_register(request: web.Request, agent: Agent, a: Authorizer) -> None:
    doc = await _body(request)
    node = _field(doc, "Node")
    if isinstance(node, str):
        _need(a.node_write(node), "node:write", node)
    svc = _field(doc, "Service")
    name = _field(svc, "Service")
    if isinstance(name, str) and name:
        _need(a.service_write(name), "service:write", name)


async def body_node_write(request: web.Request, agent: Agent, a: Authorizer) -> None:
    doc = await _body(request)
    node = _field(doc, "Node")
    if isinstance(node, str):
        _need(a.node_write(node), "node:write", node)


async def agent_service_register(request: web.Request, agent: Agent, a: Authorizer) -> None:
    name = _field(await _body(request), "Name")
    if isinstance(name, str):
        _need(a.service_write(name), "service:write", name)


def _local_service_name(agent: Agent, sid: str) -> str | None:
    svc = agent.local.live_services().get(sid)
    return svc.service if svc is not None else None


def agent_service_by_id(request: web.Request, agent: Agent, a: Authorizer) -> None:
    sid = request.path.rsplit("/", 1)[-1]
    name = _local_service_name(agent, sid)
    if name is not None:  # unknown ids get the handler's 404
        _need(a.service_write(name), "service:write", name)


async def agent_check_write(request: web.Request, agent: Agent, a: Authorizer) -> None:
    if request.path == "/v1/agent/check/register":
        sid = _field(await _body(request), "ServiceID")
    else:
        chk = agent.local.live_checks().get(request.path.rsplit("/", 1)[-1])
        sid = chk.service_id if chk is not None else None
    name = _local_service_name(agent, sid) if isinstance(sid, str) and sid else None
    if name is not None:
        _need(a.service_write(name), "service:write", name)
    else:
        _need(a.node_write(agent.config.node_name), "node:write", agent.config.node_name)


def agent_perm(access: str) -> Callable[[web.Request, Agent, Authorizer], None]:
    def check(request: web.Request, agent: Agent, a: Authorizer) -> None:
        node = agent.config.node_name
        _need(a.allowed("agent", node, access), f"agent:{access}", node)
    return check


def scalar(name: str, access: str | None = None) -> Callable[[web.Request, Agent, Authorizer], None]:
    def check(request: web.Request, agent: Agent, a: Authorizer) -> None:
        want = access or (READ if request.method in ("GET", "HEAD") else WRITE)
        _need(a.scalar(name, want), f"{name}:{want}")
    return check


def management(request: web.Request, agent: Agent, a: Authorizer) -> None:
    _need(a.management, "acl:write")


def named(resource: str, prefix: str) -> Callable[[web.Request, Agent, Authorizer], None]:
    def check(request: web.Request, agent: Agent, a: Authorizer) -> None:
        name = _tail(request, prefix)
        access = READ if request.method in ("GET", "HEAD") else WRITE
        _need(a.allowed(resource, name, access), f"{resource}:{access}", name)
    return check


async def session_write(request: web.Request, agent: Agent, a: Authorizer) -> None:
    if request.path == "/v1/session/create":
        node = _field(await _body(request), "Node") or agent.config.node_name
    else:
        sess = agent.store.sessions.get(request.path.rsplit("/", 1)[-1])
        node = sess.node if sess is not None else agent.config.node_name
    node = node if isinstance(node, str) else ""
    _need(a.allowed("session", node, WRITE), "session:write", node)


def _txn_op_allowed(a: Authorizer, op: Any) -> bool:
    kv = _field(op, "KV")
    if isinstance(kv, dict):
        key = _field(kv, "Key")
        key = key if isinstance(key, str) else ""
        verb = str(_field(kv, "Verb") or "")
        if verb in ("get", "get-tree", "check-index", "check-session", "check-not-exists"):
            return a.key_read(key)
        return a.key_write_prefix(key) if verb == "delete-tree" else a.key_write(key)
    for kind, resource in (("Node", "node"), ("Service", "service"), ("Check", "node"), ("Session", "session")):
        sub = _field(op, kind)
        if isinstance(sub, dict):
            inner = _field(sub, kind)
            name = _field(inner, "Service" if kind == "Service" else "Node") if isinstance(inner, dict) else ""
            verb = str(_field(sub, "Verb") or "")
            access = READ if verb.startswith("get") else WRITE
            return a.allowed(resource, name if isinstance(name, str) else "", access)
    return True  # not an operation: the handler answers the decode error


async def txn(request: web.Request, agent: Agent, a: Authorizer, nxt: Next) -> web.StreamResponse:
    """Each operation is checked; any denied one fails the whole transaction with Consul's 409 and
    per-operation errors, before anything is applied."""
    ops = await _body(request)
    errors = [{"OpIndex": i, "What": "Permission denied"}
              for i, op in enumerate(ops if isinstance(ops, list) else []) if not _txn_op_allowed(a, op)]
    if errors:
        return web.Response(status=409, body=encode_compact({"Results": None, "Errors": errors}),
                            content_type="application/json")
    return await nxt(request)


async def query_write(request: web.Request, agent: Agent, a: Authorizer) -> None:
    """Prepared queries: write on the query's name (from the body, else the stored query's)."""
    name = _field(await _body(request), "Name")
    if not isinstance(name, str) or not name:
        from beacon.server import queries

        stored = queries.rows(agent.store).get(request.path.rsplit("/", 1)[-1]) or {}
        name = stored.get("Name") or ""
    _need(a.allowed("query", name, WRITE), "query:write", name)


def query_result(request: web.Request, agent: Agent, a: Authorizer) -> Callable[[Any], tuple[Any, bool]]:
    """An execute/explain reply: drop instances on nodes or of services the token may not read."""
    def keep(body: Any) -> tuple[Any, bool]:
        nodes = body.get("Nodes") if isinstance(body, dict) else None
        if not isinstance(nodes, list):
            return body, False
        kept = [n for n in nodes if a.node_read(_get(n, "Node", "Node")) and a.service_read(_get(n, "Service", "Service"))]
        return ({**body, "Nodes": kept}, True) if len(kept) != len(nodes) else (body, False)
    return keep


def intention_exact(request: web.Request, agent: Agent, a: Authorizer) -> None:
    """Read: intentions read on the source or the destination; write: intentions write on the
    destination (Consul's Intention.CanRead / the entry's CanWrite)."""
    src, dst = request.query.get("source", ""), request.query.get("destination", "")
    if request.method in ("GET", "HEAD"):
        _need(a.intention_read(src) or a.intention_read(dst), "intentions:read", dst)
    else:
        _need(a.intention_write(dst), "intentions:write", dst)


def intention_match(request: web.Request, agent: Agent, a: Authorizer) -> None:
    for name in request.query.getall("name", []):
        _need(a.intention_read(name), "intentions:read", name)


def intention_check(request: web.Request, agent: Agent, a: Authorizer) -> None:
    """Consul asks only service:read on the destination: the answer is a bare allowed/denied."""
    dst = request.query.get("destination", "")
    _need(a.service_read(dst), "service:read", dst)


def _intention_visible(a: Authorizer, ixn: Any) -> bool:
    return a.intention_read(_get(ixn, "SourceName")) or a.intention_read(_get(ixn, "DestinationName"))


async def connect_authorize(request: web.Request, agent: Agent, a: Authorizer) -> None:
    target = _field(await _body(request), "Target")
    if isinstance(target, str):
        _need(a.service_write(target), "service:write", target)


# Config entries, per kind, as Consul's CanRead/CanWrite: service-* kinds on the named service,
# service-intentions with intentions rights on it, gateways and proxy-defaults with mesh:write (which
# falls back to operator:write when no mesh rule is given); proxy-defaults is readable by anyone.
_SERVICE_KINDS = ("service-defaults", "service-router", "service-splitter", "service-resolver")
_GATEWAY_KINDS = ("ingress-gateway", "terminating-gateway")


def _mesh(a: Authorizer, access: str) -> bool:
    if a.management:
        return True
    return a.scalar("mesh" if a.rules.scalar.get("mesh") is not None else "operator", access)


def _config_perm(a: Authorizer, kind: str, name: str, access: str) -> tuple[bool, str, str | None]:
    """(allowed, the permission Consul names, the resource it names)."""
    if kind in _SERVICE_KINDS or (kind in _GATEWAY_KINDS and access == READ):
        return a.allowed("service", name, access), f"service:{access}", name
    if kind == "service-intentions":
        return a.allowed("intention", name, access), f"intentions:{access}", name
    if kind in _GATEWAY_KINDS or kind == "proxy-defaults":
        return (access == READ and kind == "proxy-defaults") or _mesh(a, access), f"mesh:{access}", None
    return a.scalar("operator", access), f"operator:{access}", None  # unknown kind: the handler's 400


def _config_need(a: Authorizer, kind: str, name: str, access: str) -> None:
    ok, perm, on = _config_perm(a, kind, name, access)
    _need(ok, perm, on)


def config_entry(request: web.Request, agent: Agent, a: Authorizer) -> None:
    """GET or DELETE /v1/config/:kind/:name."""
    kind, _, name = _tail(request, "/v1/config/").partition("/")
    _config_need(a, kind.lower(), name, READ if request.method in ("GET", "HEAD") else WRITE)


async def config_apply(request: web.Request, agent: Agent, a: Authorizer) -> None:
    doc = await _body(request)
    kind, name = _field(doc, "Kind"), _field(doc, "Name")
    if isinstance(kind, str) and isinstance(name, str):
        _config_need(a, kind.lower(), name, WRITE)
    else:
        _need(a.scalar("operator", WRITE), "operator:write")  # the handler answers the decode error


def config_list(request: web.Request, agent: Agent, a: Authorizer) -> Callable[[Any], tuple[Any, bool]]:
    kind = _tail(request, "/v1/config/").lower()
    return _keep_list(lambda entry: _config_perm(a, kind, _get(entry, "Name"), READ)[0])


def _keep(pred: Callable[[Authorizer, Any], bool]) -> Callable[[web.Request, Agent, Authorizer], Any]:
    return lambda request, agent, a: _keep_list(lambda item: pred(a, item))


def _named_then(resource: str, prefix: str, pred: Callable[[Authorizer, Any], bool]) -> Rule:
    """The named service/node must be readable (else an empty, filtered reply), then per item."""
    async def rule(request: web.Request, agent: Agent, a: Authorizer, nxt: Next) -> web.StreamResponse:
        name = _tail(request, prefix)
        if not a.allowed(resource, name, READ):
            return await _filtered(request, agent, nxt, lambda body: ([] if isinstance(body, list) else None, True))
        return await _filtered(request, agent, nxt, _keep_list(lambda item: pred(a, item)))
    return rule


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    rule: Rule


def _r(methods: str, pattern: str, rule: Rule) -> Route:
    return Route(frozenset(methods.split(",")), re.compile(pattern), rule)


def _allow(request: web.Request, agent: Agent, a: Authorizer, nxt: Next) -> Awaitable[web.StreamResponse]:
    return nxt(request)


R, W = "GET,HEAD", "PUT,POST,DELETE"
TABLE: tuple[Route, ...] = (
    # Their handlers check acl:read/acl:write themselves (and bootstrap needs no token).
    _r(R + "," + W, r"/v1/acl/", _allow),
    _r(R, r"/v1/internal/acl/resolve$", _allow),
    _r(W, r"/v1/agent/token/", _allow),
    _r(R, r"/v1/status/", _allow),
    _r(R, r"/v1/catalog/datacenters$", _allow),
    _r(R, r"/v1/kv/", kv_get),
    _r(W, r"/v1/kv/", gate(kv_write)),
    _r(W, r"/v1/txn$", txn),
    _r(W, r"/v1/catalog/register$", gate(catalog_register)),
    _r(W, r"/v1/catalog/deregister$", gate(body_node_write)),
    _r(R, r"/v1/catalog/services$", filtered(_keep(lambda a, kv: a.service_read(kv[0])))),
    _r(R, r"/v1/catalog/nodes$", filtered(_keep(lambda a, n: a.node_read(_get(n, "Node"))))),
    _r(R, r"/v1/catalog/service/", _named_then("service", "/v1/catalog/service/",
                                              lambda a, s: a.node_read(_get(s, "Node")))),
    _r(R, r"/v1/catalog/node(-services)?/", gate(lambda rq, ag, a: _need(
        a.node_read(rq.path.rsplit("/", 1)[-1]), "node:read", rq.path.rsplit("/", 1)[-1]))),
    _r(R, r"/v1/health/service/", _named_then("service", "/v1/health/service/",
                                             lambda a, e: a.node_read(_get(e, "Node", "Node")))),
    _r(R, r"/v1/health/checks/", _named_then("service", "/v1/health/checks/", _check_ok)),
    _r(R, r"/v1/health/(node|state)/", filtered(_keep(_check_ok))),
    _r(R, r"/v1/agent/services$", filtered(_keep(lambda a, kv: a.service_read(_get(kv[1], "Service"))))),
    _r(R, r"/v1/agent/checks$", filtered(_keep(lambda a, kv: _check_ok(a, kv[1])))),
    _r(R, r"/v1/agent/service/", filtered(lambda rq, ag, a: lambda body: (
        (body, False) if a.service_read(_get(body, "Service")) else (None, True)))),
    _r(R, r"/v1/agent/health/service/name/", gate(named("service", "/v1/agent/health/service/name/"))),
    _r(R, r"/v1/agent/health/service/id/", _allow),
    _r(W, r"/v1/agent/service/register$", gate(agent_service_register)),
    _r(W, r"/v1/agent/service/(deregister|maintenance)/", gate(agent_service_by_id)),
    _r(W, r"/v1/agent/check/", gate(agent_check_write)),
    _r(R, r"/v1/agent/check/(pass|warn|fail)/", gate(agent_check_write)),  # Consul accepts GET here
    _r(W, r"/v1/agent/(maintenance|join/|leave|reload)", gate(agent_perm(WRITE))),
    _r(W, r"/v1/agent/force-leave/", gate(scalar("operator", WRITE))),
    _r(R, r"/v1/agent/version$", _allow),  # Consul asks no ACL for the build information
    _r(R, r"/v1/agent/host$", gate(scalar("operator", READ))),
    _r(R, r"/v1/agent/(self|members|metrics|monitor)", gate(agent_perm(READ))),
    _r(W, r"/v1/session/", gate(session_write)),
    _r(R, r"/v1/session/", filtered(_keep(lambda a, s: a.allowed("session", _get(s, "Node"), READ)))),
    _r(W, r"/v1/event/fire/", gate(named("event", "/v1/event/fire/"))),
    _r(R, r"/v1/event/list", filtered(_keep(lambda a, e: a.allowed("event", _get(e, "Name"), READ)))),
    _r(R + "," + W, r"/v1/operator/keyring", gate(scalar("keyring"))),
    _r(R + "," + W, r"/v1/operator/", gate(scalar("operator"))),
    _r(R + "," + W, r"/v1/snapshot", gate(management)),
    _r(R, r"/v1/query/[^/]+/(execute|explain)$", filtered(query_result)),
    _r(R, r"/v1/query(/[^/]+)?$", filtered(_keep(lambda a, q: a.allowed("query", _get(q, "Name"), READ)))),
    _r(W, r"/v1/query(/[^/]+)?$", gate(query_write)),
    _r(W, r"/v1/coordinate/update$", gate(body_node_write)),
    _r(R, r"/v1/health/connect/", _named_then("service", "/v1/health/connect/",
                                                        lambda a, e: a.node_read(_get(e, "Node", "Node")))),
    _r(R, r"/v1/coordinate/", filtered(_keep(lambda a, c: a.node_read(_get(c, "Node"))))),
    _r(R, r"/v1/internal/ui/services$", filtered(_keep(lambda a, s: a.service_read(_get(s, "Name"))))),
    _r(R, r"/v1/internal/ui/nodes$", filtered(_keep(lambda a, n: a.node_read(_get(n, "Node"))))),
    _r(R, r"/v1/internal/ui/node/", gate(named("node", "/v1/internal/ui/node/"))),
    # POST carries compile overrides: still a read of the service's chain.
    _r(R + ",POST", r"/v1/discovery-chain/", gate(lambda rq, ag, a: _need(
        a.service_read(_tail(rq, "/v1/discovery-chain/")), "service:read", _tail(rq, "/v1/discovery-chain/")))),
    _r(R, r"/v1/config/[^/]+$", filtered(config_list)),
    _r(R, r"/v1/config/[^/]+/", gate(config_entry)),
    _r(W, r"/v1/config/[^/]+/", gate(config_entry)),
    _r(W, r"/v1/config$", gate(config_apply)),
    _r(R, r"/v1/connect/intentions$", filtered(_keep(_intention_visible))),
    _r(R + "," + W, r"/v1/connect/intentions/exact$", gate(intention_exact)),
    _r(R, r"/v1/connect/intentions/match$", gate(intention_match)),
    _r(R, r"/v1/connect/intentions/check$", gate(intention_check)),
    _r(W, r"/v1/agent/connect/authorize$", gate(connect_authorize)),
    # Roots are public (Consul asks no ACL); a leaf needs service:write on its service.
    _r(R, r"/v1/connect/ca/roots$", _allow),
    _r(R, r"/v1/agent/connect/ca/roots$", _allow),
    _r(R, r"/v1/agent/connect/ca/leaf/", gate(lambda rq, ag, a: _need(
        a.service_write(_tail(rq, "/v1/agent/connect/ca/leaf/")), "service:write", _tail(rq, "/v1/agent/connect/ca/leaf/")))),
    _r(R + "," + W, r"/v1/connect/ca/configuration$", gate(scalar("operator"))),
)


def _segment(pattern: str) -> str:
    """The API area a route pattern names (``/v1/kv/`` -> ``kv``), the key of the lookup index."""
    return pattern.split("/")[2].rstrip("$").split("(")[0].split("[")[0] if pattern.count("/") >= 2 else ""


# Routes by area, in table order: a request's lookup tries only its own area's few patterns.
_BY_AREA: dict[str, tuple[Route, ...]] = {}
for _route in TABLE:
    _area = _segment(_route.pattern.pattern)
    _BY_AREA[_area] = (*_BY_AREA.get(_area, ()), _route)


def _candidates(path: str) -> tuple[Route, ...]:
    parts = path.split("/", 3)
    return _BY_AREA.get(parts[2], ()) if len(parts) > 2 else ()


def covered(method: str, path: str) -> bool:
    """Whether the table names this route (else it needs a management token)."""
    return any(method in route.methods and route.pattern.match(path) for route in _candidates(path))


_MANAGEMENT_ONLY = gate(management)
# (method, path) -> rule: the same few paths are requested over and over (a KV key, a service's
# health), so after the first request a route costs one dict lookup instead of its area's regexes.
_rule_cache: dict[tuple[str, str], Rule] = {}


def rule_for(method: str, path: str) -> Rule:
    key = (method, path)
    rule = _rule_cache.get(key)
    if rule is None:
        rule = _MANAGEMENT_ONLY
        for route in _candidates(path):
            if method in route.methods and route.pattern.match(path):
                rule = route.rule
                break
        if len(_rule_cache) >= 8192:
            _rule_cache.clear()  # bounded: distinct paths (every KV key) must not grow memory
        _rule_cache[key] = rule
    return rule


def _is_forwarded(path: str) -> bool:
    from beacon.agent.http.forward import FORWARDED_PREFIXES

    parts = path.split("/", 3)
    return len(parts) > 2 and parts[2] in FORWARDED_PREFIXES


async def acl_disabled(request: web.Request) -> web.StreamResponse:
    return web.Response(status=401, text="ACL support disabled", content_type="text/plain")


@web.middleware
async def acl_middleware(request: web.Request, handler: Next) -> web.StreamResponse:
    """:func:`enforcer` as an aiohttp middleware (the agent calls the enforcer from its one API
    layer, ``metrics.api_handler``, instead)."""
    return await enforcer(request.app[AGENT_KEY])(request, handler)


def enforcer(agent: Agent) -> Callable[[web.Request, Next], Awaitable[web.StreamResponse]]:
    """The ACL check for one agent: resolve the request's token (servers: synchronously, from the
    per-secret cache stamped with the ACL index), find the route's rule, apply it."""
    resolver = agent.acl
    assert resolver is not None
    client = agent.mode == "client"
    local = not resolver.waits  # servers hold the ACL tables: resolving never waits (but see primary)

    async def enforce(request: web.Request, handler: Next) -> web.StreamResponse:
        path = request.path
        if not path.startswith("/v1/") or request.method == "OPTIONS":
            return await handler(request)  # the UI's static files; OPTIONS reveals nothing
        if client and _is_forwarded(path):
            # The server that answers resolves and enforces the same token; resolving here too would
            # cost a round trip and turn a server's answer into this agent's "no server reachable".
            return await handler(request)
        secret = token_of(request)
        try:
            ident = resolver.resolve_here(secret) if local else await resolver.resolve(secret)
        except ACLNotFound:
            return web.Response(status=403, text="ACL not found", content_type="text/plain")
        except ACLUnavailable as exc:
            return web.Response(status=500, text=f"ACL resolution failed (no server answered): {exc}",
                                content_type="text/plain")
        request[IDENTITY_KEY] = ident
        request[SECRET_KEY] = secret
        try:
            if ident.authz.allow_all:
                return await handler(request)
            return await rule_for(request.method, path)(request, agent, ident.authz, handler)
        except Denied as exc:
            return _denied(ident, exc)

    return enforce
