"""Auth methods, binding rules, login and logout (Consul's ACL.AuthMethodSet/Delete,
BindingRuleSet/Delete, Login, Logout).

Login runs on the server that receives it: it validates the bearer token (a JWKS fetch, when the
method uses one, happens here and never in apply), evaluates the method's binding rules, and
proposes one ``token_set`` of a token carrying ``AuthMethod``; apply refuses it if the method was
deleted meanwhile.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from beacon.acl import auth_state, binding, jwtauth, state
from beacon.endpoints import Submit, apply
from beacon.endpoints.acl import rfc3339, set_token
from beacon.errors import PermissionDenied
from beacon.server import commands as cmd
from beacon.server.fsm import StateStore

Doc = dict[str, Any]
LOGIN_DESCRIPTION = "token created via login"


async def set_method(submit: Submit, method: Doc) -> Doc:
    stored: Doc = await apply(submit, cmd.ACLAuthMethodSet(method=method))
    return stored


async def delete_method(submit: Submit, name: str) -> None:
    await apply(submit, cmd.ACLAuthMethodDelete(name=name))


async def set_rule(submit: Submit, rule: Doc) -> Doc:
    stored: Doc = await apply(submit, cmd.ACLBindingRuleSet(rule=rule))
    return stored


async def delete_rule(submit: Submit, rid: str) -> None:
    await apply(submit, cmd.ACLBindingRuleDelete(id=rid))


# Go's encoding/json escapes these even in UTF-8 output; tools parse the description back as JSON.
_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def description(meta: dict[str, str] | None) -> str:
    """Consul's login token description: the fixed text, then the Meta as Go would marshal it
    (compact, keys sorted, UTF-8, HTML characters escaped)."""
    if not meta:
        return LOGIN_DESCRIPTION
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in _GO_ESCAPES.items():
        text = text.replace(char, escaped)
    return f"{LOGIN_DESCRIPTION}: {text}"


async def login(submit: Submit, store: StateStore, method: Doc, bearer: str, meta: dict[str, str] | None,
                datacenter: str, jwks: jwtauth.JWKSCache | None = None) -> Doc:
    """Bearer token -> a new token, or PermissionDenied (bad token, or no rule binds anything)."""
    cfg = jwtauth.decode_config(method.get("Config"))
    try:
        ident = await jwtauth.validate(cfg, bearer, jwks)
    except jwtauth.JWTError as exc:
        raise PermissionDenied(f"Permission denied: invalid bearer token: {exc}") from None
    try:
        bound = binding.evaluate(auth_state.rules(store, method["Name"]), ident.selectable(), datacenter)
    except binding.BindError as exc:
        raise PermissionDenied(f"Permission denied: {exc}") from None
    roles = {r["Name"]: r for r in state.roles(store).values()}
    policies = {p["Name"]: p for p in state.policies(store).values()}
    role_links = [{"ID": roles[n]["ID"], "Name": n} for n in bound.roles if n in roles]
    policy_links = [{"ID": policies[n]["ID"], "Name": n} for n in bound.policies if n in policies]
    if not (bound.service_identities or bound.node_identities or role_links or policy_links):
        raise PermissionDenied("Permission denied")
    now = time.time()
    token: Doc = {
        "AccessorID": str(uuid.uuid4()), "SecretID": str(uuid.uuid4()), "Description": description(meta),
        "Policies": policy_links or None, "Roles": role_links or None,
        "ServiceIdentities": bound.service_identities or None, "NodeIdentities": bound.node_identities or None,
        "Local": method.get("TokenLocality") != "global", "AuthMethod": method["Name"],
        "CreateTime": rfc3339(now),
    }
    ttl = method.get("MaxTokenTTL")
    if ttl:
        from beacon.durations import parse_duration

        token["ExpirationTime"] = rfc3339(now + parse_duration(ttl))
    return await set_token(submit, token)


async def logout(submit: Submit, store: StateStore, secret: str) -> None:
    """Delete the login-made token whose SecretID this is; any other token is refused."""
    token = state.token_by_secret(store, secret) if secret else None
    if token is None:
        raise PermissionDenied("ACL not found")
    if not token.get("AuthMethod"):
        raise PermissionDenied("Permission denied: only tokens created by a login can be logged out")
    await apply(submit, cmd.ACLTokenDelete(id=token["AccessorID"]))
