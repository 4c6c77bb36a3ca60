"""ACL writes (Consul's ACL.BootstrapTokens, TokenSet/Delete, PolicySet/Delete, RoleSet/Delete).

The HTTP layer decodes and fills the documents (IDs, hashes, times: the proposer picks them so that
apply stays deterministic); the state machine checks names, secrets and the builtins."""

from __future__ import annotations

from typing import Any

from beacon.endpoints import Submit, apply
from beacon.server import commands as cmd

Doc = dict[str, Any]


async def bootstrap(submit: Submit, token: Doc) -> Doc:
    stored: Doc = await apply(submit, cmd.ACLBootstrap(token=token))
    return stored


async def set_token(submit: Submit, token: Doc) -> Doc:
    stored: Doc = await apply(submit, cmd.ACLTokenSet(token=token))
    return stored


async def set_policy(submit: Submit, policy: Doc) -> Doc:
    stored: Doc = await apply(submit, cmd.ACLPolicySet(policy=policy))
    return stored


async def set_role(submit: Submit, role: Doc) -> Doc:
    stored: Doc = await apply(submit, cmd.ACLRoleSet(role=role))
    return stored


_DELETES: dict[str, type[cmd.Record]] = {
    "token": cmd.ACLTokenDelete, "policy": cmd.ACLPolicyDelete, "role": cmd.ACLRoleDelete,
}


async def delete(submit: Submit, what: str, ident: str) -> None:
    """Delete a token, policy or role by ID (the builtins refuse)."""
    await apply(submit, _DELETES[what](id=ident))  # type: ignore[call-arg]
