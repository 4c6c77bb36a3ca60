"""/v1/acl/auth-method*, /v1/acl/binding-rule*, /v1/acl/login and /v1/acl/logout.

Reads need ``acl:read``, writes ``acl:write`` (as the other ACL endpoints); login needs no token (the
bearer JWT is the credential) and logout only the login-made token it deletes. Only the ``jwt`` type
is built; the other types Consul knows are refused by name, so a caller learns why. Client agents
forward all of these to a server (``forward.py`` covers ``/v1/acl/*``). State:
:mod:`beacon.acl.auth_state`; JWT checks: :mod:`beacon.acl.jwtauth`; rules: :mod:`beacon.acl.binding`.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from beacon.acl import auth_state, binding, jwtauth
from beacon.acl.rules import READ, WRITE
from beacon.agent.http.acl import MAX_EXPIRATION, MIN_EXPIRATION, _need, render_token
from beacon.agent.http.core import HTTPError, Reply, Router, read_json
from beacon.agent.http.decode import DecodeError, Fields
from beacon.durations import format_duration
from beacon.endpoints import acl_auth

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

router = Router()
SUPPORTED_TYPES = ("jwt",)
CONSUL_ONLY_TYPES = ("kubernetes", "oidc", "aws-iam")
_METHOD_NAME = re.compile(r"^[A-Za-z0-9\-_]{1,128}$")


# ---------------------------------------------------------------------- auth methods
def _check_type(kind: str) -> None:
    if not kind:
        raise HTTPError(400, "Invalid Auth Method: no Type is set")
    if kind in CONSUL_ONLY_TYPES:
        raise HTTPError(400, f"Invalid Auth Method: Type \"{kind}\" is not supported by this build of Beacon "
                             f"(supported: {', '.join(SUPPORTED_TYPES)})")
    if kind not in SUPPORTED_TYPES:
        raise HTTPError(400, f"Invalid Auth Method: unknown Type \"{kind}\" "
                             f"(supported: {', '.join(SUPPORTED_TYPES)})")


def decode_method(body: Any, name: str | None, old: dict[str, Any] | None) -> dict[str, Any]:
    f = Fields(body or {})
    given = f.str("Name")
    if name is not None and given and given != name:
        raise HTTPError(400, "Auth method name in URL and payload do not match")
    name = given or name or ""
    if not name:
        raise HTTPError(400, "Invalid Auth Method: no Name is set")
    if not _METHOD_NAME.match(name):
        raise HTTPError(400, "Invalid Auth Method: invalid Name; use 1-128 letters, digits, '-' and '_'")
    kind = f.str("Type") or (old["Type"] if old else "")
    _check_type(kind)
    if old is not None and kind != old["Type"]:
        raise HTTPError(400, "Invalid Auth Method: the Type of an existing auth method cannot change")
    ttl = f.duration("MaxTokenTTL") or 0.0
    if ttl and not MIN_EXPIRATION <= ttl <= MAX_EXPIRATION:
        raise HTTPError(400, f"Invalid Auth Method: MaxTokenTTL {format_duration(ttl)} must be between "
                             f"{format_duration(MIN_EXPIRATION)} and {format_duration(MAX_EXPIRATION)}")
    locality = f.str("TokenLocality")
    if locality not in ("", "local", "global"):
        raise HTTPError(400, f"Invalid Auth Method: TokenLocality \"{locality}\" should be \"local\" or \"global\"")
    config = f.get("Config")
    try:
        jwtauth.decode_config(config)
    except jwtauth.ConfigError as exc:
        raise HTTPError(400, str(exc)) from None
    row: dict[str, Any] = {"Name": name, "Type": kind, "DisplayName": f.str("DisplayName"),
                           "Description": f.str("Description"), "Config": config}
    if ttl:
        row["MaxTokenTTL"] = format_duration(ttl)
    if locality:
        row["TokenLocality"] = locality
    return row


def _method(agent: Agent, name: str) -> dict[str, Any]:
    row = auth_state.method(agent.store, name)
    if row is None:
        raise HTTPError(404, f"ACL auth method not found: \"{name}\" does not exist")
    return row


@router.put("/v1/acl/auth-method")
async def method_create(req: web.Request, agent: Agent) -> Reply:
    _need(req, WRITE)
    row = decode_method(await read_json(req), None, None)
    if auth_state.method(agent.store, row["Name"]) is not None:
        raise HTTPError(400, f"Invalid Auth Method: an auth method named \"{row['Name']}\" already exists")
    return Reply(await acl_auth.set_method(agent.submit, row))


@router.get("/v1/acl/auth-method/{name}")
async def method_read(req: web.Request, agent: Agent) -> Reply:
    _need(req, READ)
    return Reply(_method(agent, req.match_info["name"]))


@router.put("/v1/acl/auth-method/{name}")
async def method_update(req: web.Request, agent: Agent) -> Reply:
    _need(req, WRITE)
    name = req.match_info["name"]
    old = _method(agent, name)
    row = decode_method(await read_json(req), name, old)
    return Reply(await acl_auth.set_method(agent.submit, row))


@router.delete("/v1/acl/auth-method/{name}")
async def method_delete(req: web.Request, agent: Agent) -> Reply:
    _need(req, WRITE)
    await acl_auth.delete_method(agent.submit, req.match_info["name"])
    return Reply(True)


@router.get("/v1/acl/auth-methods")
async def method_list(req: web.Request, agent: Agent) -> Reply:
    from beacon.acl import state

    _need(req, READ)
    out = [{k: v for k, v in m.items() if k != "Config"} for m in auth_state.methods(agent.store).values()]
    return Reply(sorted(out, key=lambda m: m["Name"]), index=state.acl_index(agent.store))


# ---------------------------------------------------------------------- binding rules
def decode_rule(agent: Agent, body: Any, rid: str, old: dict[str, Any] | None) -> dict[str, Any]:
    f = Fields(body or {})
    given_id = f.str("ID")
    if old is not None and given_id and given_id != rid:
        raise HTTPError(400, "Binding rule ID in URL and payload do not match")
    method_name = f.str("AuthMethod") or (old["AuthMethod"] if old else "")
    if not method_name:
        raise HTTPError(400, "Invalid Binding Rule: no AuthMethod is set")
    if old is not None and method_name != old["AuthMethod"]:
        raise HTTPError(400, "Invalid Binding Rule: the AuthMethod of a binding rule cannot change")
    method = auth_state.method(agent.store, method_name)
    if method is None:
        raise HTTPError(400, f"Invalid Binding Rule: unknown AuthMethod \"{method_name}\"")
    bind_type = f.str("BindType")
    if not bind_type:
        raise HTTPError(400, "Invalid Binding Rule: no BindType is set")
    if bind_type == "templated-policy":
        raise HTTPError(400, "Invalid Binding Rule: BindType \"templated-policy\" is not supported by this build "
                             f"of Beacon (supported: {', '.join(binding.BIND_TYPES)})")
    bind_vars = f.get("BindVars")
    if bind_vars is not None and not isinstance(bind_vars, dict):
        raise DecodeError("Request decode failed: BindVars must be an object")
    value_vars, list_vars = jwtauth.decode_config(method.get("Config")).variables()
    try:
        binding.validate_rule(bind_type, f.str("BindName"), f.str("Selector"), value_vars, list_vars)
    except binding.BindError as exc:
        raise HTTPError(400, f"Invalid Binding Rule: {exc}") from None
    row: dict[str, Any] = {"ID": rid, "Description": f.str("Description"), "AuthMethod": method_name,
                           "Selector": f.str("Selector"), "BindType": bind_type, "BindName": f.str("BindName")}
    if bind_vars:
        row["BindVars"] = bind_vars
    return row


def _rule(agent: Agent, rid: str) -> dict[str, Any]:
    row = auth_state.rule(agent.store, rid)
    if row is None:
        raise HTTPError(404, f"ACL binding rule not found: \"{rid}\" does not exist")
    return row


@router.put("/v1/acl/binding-rule")
async def rule_create(req: web.Request, agent: Agent) -> Reply:
    _need(req, WRITE)
    body = await read_json(req)
    if Fields(body or {}).str("ID"):
        raise HTTPError(400, "Invalid Binding Rule: ID is assigned by the server on create")
    row = decode_rule(agent, body, str(uuid.uuid4()), None)
    return Reply(await acl_auth.set_rule(agent.submit, row))


@router.get("/v1/acl/binding-rule/{id}")
async def rule_read(req: web.Request, agent: Agent) -> Reply:
    _need(req, READ)
    return Reply(_rule(agent, req.match_info["id"]))


@router.put("/v1/acl/binding-rule/{id}")
async def rule_update(req: web.Request, agent: Agent) -> Reply:
    _need(req, WRITE)
    rid = req.match_info["id"]
    old = _rule(agent, rid)
    return Reply(await acl_auth.set_rule(agent.submit, decode_rule(agent, await read_json(req), rid, old)))


@router.delete("/v1/acl/binding-rule/{id}")
async def rule_delete(req: web.Request, agent: Agent) -> Reply:
    _need(req, WRITE)
    await acl_auth.delete_rule(agent.submit, req.match_info["id"])
    return Reply(True)


@router.get("/v1/acl/binding-rules")
async def rule_list(req: web.Request, agent: Agent) -> Reply:
    from beacon.acl import state

    _need(req, READ)
    rows = auth_state.rules(agent.store, req.query.get("authmethod") or None)
    return Reply(rows, index=state.acl_index(agent.store))


# ---------------------------------------------------------------------- login / logout
@router.put("/v1/acl/login")  # Consul clients POST: the router takes POST where PUT is
async def login(req: web.Request, agent: Agent) -> Reply:
    f = Fields(await read_json(req) or {})
    name, bearer = f.str("AuthMethod"), f.str("BearerToken")
    if not name:
        raise HTTPError(400, "Missing auth method name")
    if not bearer:
        raise HTTPError(400, "Missing bearer token")
    meta = f.str_map("Meta") if f.get("Meta") is not None else None
    method = auth_state.method(agent.store, name)
    if method is None:
        raise HTTPError(403, f"ACL not found: auth method \"{name}\" not found")
    _check_type(method["Type"])
    token = await acl_auth.login(agent.submit, agent.store, method, bearer, meta, agent.config.datacenter)
    return Reply(render_token(agent, token, True))


@router.put("/v1/acl/logout")
async def logout(req: web.Request, agent: Agent) -> Reply:
    from beacon.agent.http.acl_enforce import token_of

    secret = token_of(req)
    if not secret:
        raise HTTPError(401, "Supplied token does not exist")
    await acl_auth.logout(agent.submit, agent.store, secret)
    return Reply(True)
