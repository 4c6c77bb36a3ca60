"""ACL writes (Consul's ACL.BootstrapTokens, TokenSet/Clone/Delete, PolicySet/Delete, RoleSet/Delete).

The HTTP layer decodes the documents; the endpoint picks what the proposer must (IDs, secrets,
times, the content hash) so that apply stays deterministic, and the state machine checks names,
secrets and the builtins."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import time
import uuid
from typing import Any

import orjson

from beacon.acl import state
from beacon.endpoints import Submit, apply
from beacon.server import commands as cmd

Doc = dict[str, Any]


def rfc3339(at: float | None = None) -> str:
    return dt.datetime.fromtimestamp(at if at is not None else time.time(), dt.UTC).isoformat(
        timespec="microseconds").replace("+00:00", "Z")


def content_hash(doc: Doc) -> str:
    """Consul's Hash of a token, policy or role: its content without indexes and secret."""
    body = {k: v for k, v in doc.items() if k not in ("CreateIndex", "ModifyIndex", "Hash", "SecretID")}
    return base64.b64encode(hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest()).decode()


def _hashed(doc: Doc) -> Doc:
    out = dict(doc)
    out["Hash"] = content_hash(out)
    return out


async def bootstrap(submit: Submit, secret: str = "") -> Doc:
    """The first management token (refused once done); ``secret`` as given, else a new UUID."""
    token = {"AccessorID": str(uuid.uuid4()), "SecretID": secret or str(uuid.uuid4()),
             "Description": "Bootstrap Token (Global Management)",
             "Policies": [{"ID": state.MANAGEMENT_POLICY_ID, "Name": "global-management"}],
             "Local": False, "CreateTime": rfc3339()}
    stored: Doc = await apply(submit, cmd.ACLBootstrap(token=_hashed(token)))
    return stored


async def set_token(submit: Submit, token: Doc) -> Doc:
    stored: Doc = await apply(submit, cmd.ACLTokenSet(token=_hashed(token)))
    return stored


async def clone_token(submit: Submit, old: Doc, description: str) -> Doc:
    """A new token (new AccessorID and SecretID) with ``old``'s links."""
    token = dict(old, AccessorID=str(uuid.uuid4()), SecretID=str(uuid.uuid4()), CreateTime=rfc3339(),
                 Description=description or old.get("Description", ""))
    token.pop("CreateIndex", None)
    token.pop("ModifyIndex", None)
    return await set_token(submit, token)


async def set_policy(submit: Submit, policy: Doc) -> Doc:
    stored: Doc = await apply(submit, cmd.ACLPolicySet(policy=_hashed(policy)))
    return stored


async def set_role(submit: Submit, role: Doc) -> Doc:
    stored: Doc = await apply(submit, cmd.ACLRoleSet(role=_hashed(role)))
    return stored


_DELETES: dict[str, type[cmd.Record]] = {
    "token": cmd.ACLTokenDelete, "policy": cmd.ACLPolicyDelete, "role": cmd.ACLRoleDelete,
}


async def delete(submit: Submit, what: str, ident: str) -> None:
    """Delete a token, policy or role by ID (the builtins refuse)."""
    await apply(submit, _DELETES[what](id=ident))  # type: ignore[call-arg]
