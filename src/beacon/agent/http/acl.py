"""/v1/acl/*: bootstrap, tokens, policies, roles; /v1/agent/token/:type; the servers' token lookup
for client agents (``/v1/internal/acl/resolve``).

Bodies are decoded leniently (case-insensitive keys, as py-consul sends lowercase ``name``/``rules``);
replies use Consul's shapes. Links to policies and roles are given by ``ID`` or ``Name`` and stored
as ``{ID, Name}``; a link to something deleted is dropped from replies. Reading a token's SecretID
needs ``acl:write``, as in Consul. The state and its commands live in :mod:`beacon.acl.state`.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from beacon.acl import state
from beacon.acl.resolver import ACLNotFound, ACLUnavailable, Identity
from beacon.acl.rules import READ, WRITE, RuleError, parse
from beacon.agent.http.core import HTTPError, Reply, Router, read_json
from beacon.agent.http.decode import DecodeError, Fields
from beacon.endpoints import acl as acl_endpoint

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

router = Router()
IDENTITY_KEY = "beacon.acl.identity"
# Consul's acl.token_min_expiration_ttl / token_max_expiration_ttl defaults.
MIN_EXPIRATION, MAX_EXPIRATION = 60.0, 24 * 3600.0
AGENT_TOKEN_TYPES = {"default": "default", "agent": "agent", "agent_recovery": "agent_recovery",
                     "agent_master": "agent_recovery", "acl_token": "default", "acl_agent_token": "agent",
                     "acl_agent_master_token": "agent_recovery", "replication": "replication",
                     "config_file_service_registration": "config_file_service_registration"}


def identity(req: web.Request) -> Identity:
    return req[IDENTITY_KEY]


def _need(req: web.Request, access: str) -> Identity:
    ident = identity(req)
    if not ident.authz.scalar("acl", access):
        raise HTTPError(403, f"Permission denied: token with AccessorID '{ident.accessor}' lacks permission "
                             f"'acl:{access}'")
    return ident


# ---------------------------------------------------------------------- rendering
def _live_links(links: list[dict[str, Any]] | None, table: dict[str, dict[str, Any]]) -> list[dict[str, Any]] | None:
    out = [{"ID": link["ID"], "Name": table[link["ID"]]["Name"]} for link in links or [] if link["ID"] in table]
    return out or None


def render_token(agent: Agent, token: dict[str, Any], show_secret: bool) -> dict[str, Any]:
    out = dict(token)
    out["Policies"] = _live_links(token.get("Policies"), state.policies(agent.store))
    out["Roles"] = _live_links(token.get("Roles"), state.roles(agent.store))
    if not show_secret:
        out["SecretID"] = "<hidden>"
    return {k: v for k, v in out.items() if v is not None or k in ("Policies",)}


def render_role(agent: Agent, role: dict[str, Any]) -> dict[str, Any]:
    out = dict(role)
    out["Policies"] = _live_links(role.get("Policies"), state.policies(agent.store))
    return out


# ---------------------------------------------------------------------- decoding
def _links(agent: Agent, f: Fields, name: str, kind: str) -> list[dict[str, str]] | None:
    raw = f.get(name)
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise DecodeError(f"Request decode failed: {name} must be a list")
    table = state.policies(agent.store) if kind == "policy" else state.roles(agent.store)
    out: list[dict[str, str]] = []
    for item in raw:
        link = Fields(item, name)
        lid, lname = link.str("ID"), link.str("Name")
        row = table.get(lid) if lid else next((r for r in table.values() if r["Name"] == lname), None)
        if row is None:
            what = "Policy" if kind == "policy" else "Role"
            raise HTTPError(400, f"Invalid {what} ID/Name: {lid or lname!r} does not exist")
        if all(x["ID"] != row["ID"] for x in out):
            out.append({"ID": row["ID"], "Name": row["Name"]})
    return out or None


def _identities(f: Fields, name: str, field: str) -> list[dict[str, Any]] | None:
    raw = f.get(name)
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise DecodeError(f"Request decode failed: {name} must be a list")
    out = []
    for item in raw:
        sub = Fields(item, name)
        value = sub.str(field)
        if not value:
            raise HTTPError(400, f"{name} entries need a {field}")
        entry: dict[str, Any] = {field: value}
        if sub.get("Datacenter") is not None:
            entry["Datacenter"] = sub.str("Datacenter")
        if sub.get("Datacenters") is not None:
            entry["Datacenters"] = sub.str_list("Datacenters")
        out.append(entry)
    return out or None


def decode_token(agent: Agent, body: Any, old: dict[str, Any] | None) -> dict[str, Any]:
    f = Fields(body or {})
    accessor = f.str("AccessorID") or (old["AccessorID"] if old else str(uuid.uuid4()))
    secret = f.str("SecretID") or (old["SecretID"] if old else str(uuid.uuid4()))
    if old is not None and f.str("SecretID") and f.str("SecretID") != old["SecretID"]:
        raise HTTPError(400, "Cannot change a token's SecretID")
    for what, value in (("AccessorID", accessor), ("SecretID", secret)):
        try:
            uuid.UUID(value)
        except ValueError:
            if not (old and value == old[what]):
                raise HTTPError(400, f"Invalid {what}: must be a UUID") from None
    now = time.time()
    expires = f.str("ExpirationTime")
    ttl = f.duration("ExpirationTTL")
    if expires and ttl:
        raise HTTPError(400, "Expiration TTL and Expiration Time cannot both be set")
    if ttl is not None and not MIN_EXPIRATION <= ttl <= MAX_EXPIRATION:
        raise HTTPError(400, "Token Expiration TTL must be between 1m0s and 24h0m0s")
    if ttl:
        expires = acl_endpoint.rfc3339(now + ttl)
    elif expires and old is None:
        from beacon.acl.resolver import parse_time

        at = parse_time(expires)
        if at is None:
            raise HTTPError(400, f"Invalid ExpirationTime {expires!r}: not an RFC 3339 time")
        if not MIN_EXPIRATION <= at - now <= MAX_EXPIRATION:
            raise HTTPError(400, "ExpirationTime must be between 1m0s and 24h0m0s in the future")
    token = {
        "AccessorID": accessor, "SecretID": secret, "Description": f.str("Description"),
        "Policies": _links(agent, f, "Policies", "policy"), "Roles": _links(agent, f, "Roles", "role"),
        "ServiceIdentities": _identities(f, "ServiceIdentities", "ServiceName"),
        "NodeIdentities": _identities(f, "NodeIdentities", "NodeName"),
        "Local": f.bool("Local", default=old["Local"] if old else False),
        "CreateTime": old["CreateTime"] if old else acl_endpoint.rfc3339(now),
    }
    if old is not None and old.get("AuthMethod"):
        token["AuthMethod"] = old["AuthMethod"]  # a login-made token stays one (logout, method delete)
    if old is not None and old.get("ExpirationTime"):
        token["ExpirationTime"] = old["ExpirationTime"]  # Consul: expiration cannot change on update
    elif expires:
        token["ExpirationTime"] = expires
    return token


def _rules_text(f: Fields) -> str:
    rules = f.get("Rules")
    if rules is None:
        return ""
    if isinstance(rules, dict):
        return orjson.dumps(rules).decode()
    if not isinstance(rules, str):
        raise DecodeError("Request decode failed: Rules must be a string")
    if rules.startswith('"'):
        # py-consul json.dumps()es the rules it is given, so a string arrives quoted once more.
        try:
            inner = orjson.loads(rules)
            if isinstance(inner, str):
                return inner
        except orjson.JSONDecodeError:
            pass
    return rules


def decode_policy(body: Any, pid: str) -> dict[str, Any]:
    f = Fields(body or {})
    name = f.str("Name")
    if not name:
        raise HTTPError(400, "Invalid Policy: no Name is set")
    rules = _rules_text(f)
    try:
        parse(rules)
    except RuleError as exc:
        raise HTTPError(400, str(exc)) from None
    policy = {"ID": pid, "Name": name, "Description": f.str("Description"), "Rules": rules,
              "Datacenters": f.str_list("Datacenters") or None}
    return policy


def decode_role(agent: Agent, body: Any, rid: str) -> dict[str, Any]:
    f = Fields(body or {})
    name = f.str("Name")
    if not name:
        raise HTTPError(400, "Invalid Role: no Name is set")
    role = {"ID": rid, "Name": name, "Description": f.str("Description"),
            "Policies": _links(agent, f, "Policies", "policy"),
            "ServiceIdentities": _identities(f, "ServiceIdentities", "ServiceName"),
            "NodeIdentities": _identities(f, "NodeIdentities", "NodeName")}
    return role


# ---------------------------------------------------------------------- bootstrap
@router.put("/v1/acl/bootstrap")
async def bootstrap(req: web.Request, agent: Agent) -> Reply:
    body = await read_json(req, required=False)
    stored = await acl_endpoint.bootstrap(agent.submit, Fields(body or {}).str("BootstrapSecret"))
    return Reply(render_token(agent, stored, True))


# ---------------------------------------------------------------------- tokens
def _token(agent: Agent, accessor: str) -> dict[str, Any]:
    tok = state.tokens(agent.store).get(accessor)
    if tok is None:
        raise HTTPError(403, "ACL not found")
    return tok


@router.get("/v1/acl/token/self")
async def token_self(req: web.Request, agent: Agent) -> Reply:
    ident = identity(req)
    tok = state.tokens(agent.store).get(ident.accessor)
    if tok is None and agent.acl.primary is not None and ident.accessor:
        # a token of the primary datacenter (resolved there): its own record is there too, as
        # Consul's secondary forwards a token read to the primary without token replication
        from beacon.agent.http.acl_enforce import SECRET_KEY
        from beacon.agent.security import fetch_from_primary

        try:
            return Reply(await fetch_from_primary(agent, req.get(SECRET_KEY, ""), "/v1/acl/token/self"))
        except ACLNotFound:
            raise HTTPError(403, "ACL not found") from None
        except Exception as exc:
            raise HTTPError(500, f"reading the token from the primary datacenter failed: {exc}") from None
    if tok is None:
        raise HTTPError(403, "ACL not found")
    return Reply(render_token(agent, tok, True))


@router.put("/v1/acl/token")
async def token_create(req: web.Request, agent: Agent) -> Reply:
    _need(req, WRITE)
    body = await read_json(req)
    token = decode_token(agent, body, None)
    if token["AccessorID"] in state.tokens(agent.store):
        raise HTTPError(400, "Invalid Token: AccessorID is already in use")
    return Reply(render_token(agent, await acl_endpoint.set_token(agent.submit, token), True))


@router.get("/v1/acl/token/{id}")
async def token_read(req: web.Request, agent: Agent) -> Reply:
    ident = _need(req, READ)
    tok = _token(agent, req.match_info["id"])
    return Reply(render_token(agent, tok, ident.authz.scalar("acl", WRITE)))


@router.put("/v1/acl/token/{id}")
async def token_update(req: web.Request, agent: Agent) -> Reply:
    _need(req, WRITE)
    accessor = req.match_info["id"]
    old = _token(agent, accessor)
    body = dict(await read_json(req) or {})
    body.setdefault("AccessorID", accessor)
    if Fields(body).str("AccessorID") != accessor:
        raise HTTPError(400, "Token AccessorID in URL and payload do not match")
    token = decode_token(agent, body, old)
    return Reply(render_token(agent, await acl_endpoint.set_token(agent.submit, token), True))


@router.put("/v1/acl/token/{id}/clone")
async def token_clone(req: web.Request, agent: Agent) -> Reply:
    _need(req, WRITE)
    old = _token(agent, req.match_info["id"])
    if old.get("AuthMethod"):
        raise HTTPError(400, "Cannot clone a token created by an auth method")
    body = Fields(await read_json(req, required=False) or {})
    return Reply(render_token(agent, await acl_endpoint.clone_token(agent.submit, old, body.str("Description")),
                              True))


@router.delete("/v1/acl/token/{id}")
async def token_delete(req: web.Request, agent: Agent) -> Reply:
    _need(req, WRITE)
    await acl_endpoint.delete(agent.submit, "token", req.match_info["id"])
    return Reply(True)


@router.get("/v1/acl/tokens")
async def token_list(req: web.Request, agent: Agent) -> Reply:
    show_secret = _need(req, READ).authz.scalar("acl", WRITE)
    policy, role = req.query.get("policy"), req.query.get("role")
    method = req.query.get("authmethod")
    out = []
    for tok in state.tokens(agent.store).values():
        if method and tok.get("AuthMethod") != method:
            continue
        if policy and all(p["ID"] != policy for p in tok.get("Policies") or []):
            continue
        if role and all(r["ID"] != role for r in tok.get("Roles") or []):
            continue
        out.append(render_token(agent, tok, show_secret))
    return Reply(sorted(out, key=lambda t: t.get("CreateIndex", 0)), index=state.acl_index(agent.store))


# ---------------------------------------------------------------------- policies
def _one(table: dict[str, dict[str, Any]], ident: str, what: str) -> dict[str, Any]:
    row = table.get(ident)
    if row is None:
        raise HTTPError(403, f"ACL not found: {what} {ident!r} does not exist")
    return row


@router.put("/v1/acl/policy")
async def policy_create(req: web.Request, agent: Agent) -> Reply:
    _need(req, WRITE)
    policy = decode_policy(await read_json(req), str(uuid.uuid4()))
    return Reply(await acl_endpoint.set_policy(agent.submit, policy))


@router.get("/v1/acl/policy/name/{name}")
async def policy_by_name(req: web.Request, agent: Agent) -> Reply:
    _need(req, READ)
    pol = state.policy_by_name(agent.store, req.match_info["name"])
    if pol is None:
        raise HTTPError(403, "ACL not found")
    return Reply(pol)


@router.get("/v1/acl/policy/{id}")
async def policy_read(req: web.Request, agent: Agent) -> Reply:
    _need(req, READ)
    return Reply(_one(state.policies(agent.store), req.match_info["id"], "policy"))


@router.put("/v1/acl/policy/{id}")
async def policy_update(req: web.Request, agent: Agent) -> Reply:
    _need(req, WRITE)
    pid = req.match_info["id"]
    _one(state.policies(agent.store), pid, "policy")
    policy = decode_policy(await read_json(req), pid)
    return Reply(await acl_endpoint.set_policy(agent.submit, policy))


@router.delete("/v1/acl/policy/{id}")
async def policy_delete(req: web.Request, agent: Agent) -> Reply:
    _need(req, WRITE)
    await acl_endpoint.delete(agent.submit, "policy", req.match_info["id"])
    return Reply(True)


@router.get("/v1/acl/policies")
async def policy_list(req: web.Request, agent: Agent) -> Reply:
    _need(req, READ)
    out = [{k: v for k, v in p.items() if k != "Rules"} for p in state.policies(agent.store).values()]
    return Reply(out, index=state.acl_index(agent.store))


# ---------------------------------------------------------------------- roles
@router.put("/v1/acl/role")
async def role_create(req: web.Request, agent: Agent) -> Reply:
    _need(req, WRITE)
    role = decode_role(agent, await read_json(req), str(uuid.uuid4()))
    return Reply(render_role(agent, await acl_endpoint.set_role(agent.submit, role)))


@router.get("/v1/acl/role/name/{name}")
async def role_by_name(req: web.Request, agent: Agent) -> Reply:
    _need(req, READ)
    role = state.role_by_name(agent.store, req.match_info["name"])
    if role is None:
        raise HTTPError(403, "ACL not found")
    return Reply(render_role(agent, role))


@router.get("/v1/acl/role/{id}")
async def role_read(req: web.Request, agent: Agent) -> Reply:
    _need(req, READ)
    return Reply(render_role(agent, _one(state.roles(agent.store), req.match_info["id"], "role")))


@router.put("/v1/acl/role/{id}")
async def role_update(req: web.Request, agent: Agent) -> Reply:
    _need(req, WRITE)
    rid = req.match_info["id"]
    _one(state.roles(agent.store), rid, "role")
    role = decode_role(agent, await read_json(req), rid)
    return Reply(render_role(agent, await acl_endpoint.set_role(agent.submit, role)))


@router.delete("/v1/acl/role/{id}")
async def role_delete(req: web.Request, agent: Agent) -> Reply:
    _need(req, WRITE)
    await acl_endpoint.delete(agent.submit, "role", req.match_info["id"])
    return Reply(True)


@router.get("/v1/acl/roles")
async def role_list(req: web.Request, agent: Agent) -> Reply:
    _need(req, READ)
    policy = req.query.get("policy")
    out = [render_role(agent, r) for r in state.roles(agent.store).values()
           if not policy or any(p["ID"] == policy for p in r.get("Policies") or [])]
    return Reply(out, index=state.acl_index(agent.store))


# ---------------------------------------------------------------------- server side of a client's lookup
@router.get("/v1/internal/acl/resolve")
async def resolve_for_client(req: web.Request, agent: Agent) -> Reply:
    """What a client agent needs to authorize a SecretID it was handed (the caller holds the secret)."""
    from beacon.agent.http.acl_enforce import SECRET_KEY

    secret = req.get(SECRET_KEY, "")
    try:
        return Reply(await agent.acl.describe_anywhere(secret))
    except ACLNotFound:
        raise HTTPError(403, "ACL not found") from None
    except ACLUnavailable as exc:
        raise HTTPError(500, f"ACL resolution failed (no server of the primary datacenter answered): {exc}") \
            from None


# Agent-local: which token the agent uses for what (Consul's /v1/agent/token/:type).
agent_router = Router()


@agent_router.put("/v1/agent/token/{type}")
async def agent_token(req: web.Request, agent: Agent) -> Reply:
    ident = identity(req)
    if not ident.authz.allowed("agent", agent.config.node_name, WRITE):
        raise HTTPError(403, f"Permission denied: token with AccessorID '{ident.accessor}' lacks permission "
                             f"'agent:write' on \"{agent.config.node_name}\"")
    kind = AGENT_TOKEN_TYPES.get(req.match_info["type"])
    if req.match_info["type"] == "dns":
        kind = "dns"  # DNS answers with it before the default token (read at every query)
    if kind is None:
        raise HTTPError(404, f"Token \"{req.match_info['type']}\" is unknown")
    body = Fields(await read_json(req))
    agent.acl.tokens[kind] = body.str("Token", "token")
    from beacon.agent.security import persist_tokens

    persist_tokens(agent)
    return Reply(None, empty=True)
