"""PUT /v1/txn: decode Consul's op list, run it through the log (or, when it only reads, against the
local state like any read), and answer 200 with Results or 409 with Errors."""

from __future__ import annotations

import base64
import binascii
import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from beacon.agent.http.core import MAX_JSON_DEPTH, HTTPError, Reply, Router, json_depth, query_options
from beacon.agent.http.decode import DecodeError, Fields
from beacon.agent.http.encode import catalog_service_json, check_json, kv_json, node_json
from beacon.endpoints import txn as txn_endpoint
from beacon.server.consensus import NoLeaderError
from beacon.server.txn import CATALOG_VERBS, KV_VERBS, MAX_OPS, TxnOutcome, is_read_only

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

router = Router()
TXN_MAX_REQ_LEN = 512 * 1024


def _b64(value: Any, where: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise DecodeError(f"Request decode failed: {where}.Value must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError(f"Request decode failed: {where}.Value is not valid base64") from None


def _node_dict(f: Fields) -> dict[str, Any]:
    return {"node": f.str("Node"), "address": f.str("Address"), "id": f.str("ID"),
            "datacenter": f.str("Datacenter"), "tagged_addresses": f.str_map("TaggedAddresses"),
            "meta": f.str_map("Meta"), "modify_index": f.uint("ModifyIndex")}


def _service_dict(f: Fields) -> dict[str, Any]:
    return {"id": f.str("ID"), "service": f.str("Service"), "tags": f.str_list("Tags"),
            "address": f.str("Address"), "port": f.int("Port"), "meta": f.str_map("Meta"),
            "enable_tag_override": f.bool("EnableTagOverride"), "kind": f.str("Kind"),
            "modify_index": f.uint("ModifyIndex")}


def _check_dict(f: Fields) -> dict[str, Any]:
    definition = f.get("Definition")
    return {"node": f.str("Node"), "check_id": f.str("CheckID"), "name": f.str("Name"),
            "status": f.str("Status") or "critical", "notes": f.str("Notes"), "output": f.str("Output"),
            "service_id": f.str("ServiceID"), "type": f.str("Type"),
            "definition": definition if isinstance(definition, dict) else {},
            "modify_index": f.uint("ModifyIndex")}


def decode_ops(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, list):
        raise DecodeError("Request decode failed: expected a JSON array of operations")
    if len(body) > MAX_OPS:
        raise HTTPError(413, f"Transaction contains too many operations ({len(body)} > {MAX_OPS})")
    ops: list[dict[str, Any]] = []
    for i, raw in enumerate(body):
        f = Fields(raw, f"operation {i}")
        if (kv := f.obj("KV")) is not None:
            verb = kv.str("Verb")
            if verb not in KV_VERBS:
                raise DecodeError(f"Request decode failed: unknown KV verb {verb!r} in operation {i}")
            ops.append({"type": "kv", "verb": verb, "key": kv.str("Key"), "value": _b64(kv.get("Value"), "KV"),
                        "flags": kv.uint("Flags"), "index": kv.uint("Index"), "session": kv.str("Session")})
            continue
        kind, sub = next(((k, f.obj(k)) for k in ("Node", "Service", "Check") if f.obj(k) is not None),
                         (None, None))
        if kind is None or sub is None:
            raise DecodeError(f"Request decode failed: operation {i} has no KV, Node, Service or Check")
        verb = sub.str("Verb")
        if verb not in CATALOG_VERBS:
            raise DecodeError(f"Request decode failed: unknown {kind} verb {verb!r} in operation {i}")
        if kind == "Node":
            ops.append({"type": "node", "verb": verb, "node": _node_dict(Fields(sub.get("Node") or {}))})
        elif kind == "Service":
            ops.append({"type": "service", "verb": verb, "node": sub.str("Node"),
                        "service": _service_dict(Fields(sub.get("Service") or {}))})
        else:
            ops.append({"type": "check", "verb": verb, "check": _check_dict(Fields(sub.get("Check") or {}))})
    return ops


def _result_json(kind: str, obj: Any) -> dict[str, Any]:
    if kind == "kv":
        return {"KV": kv_json(obj)}
    if kind == "node":
        return {"Node": node_json(obj)}
    if kind == "service":
        return {"Service": catalog_service_json(obj)}
    return {"Check": check_json(obj)}


def outcome_json(outcome: TxnOutcome) -> tuple[int, dict[str, Any]]:
    if outcome.errors:
        return 409, {"Results": None, "Errors": [{"OpIndex": i, "What": what} for i, what in outcome.errors]}
    return 200, {"Results": [_result_json(k, o) for k, o in outcome.results or []], "Errors": None}


async def txn(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    if req.content_length is not None and req.content_length > TXN_MAX_REQ_LEN:
        raise HTTPError(413, f"Request body({req.content_length} bytes) too large, max size: "
                             f"{TXN_MAX_REQ_LEN} bytes. See the txn_max_req_len limit.")
    data = await req.read()
    if len(data) > TXN_MAX_REQ_LEN:
        raise HTTPError(413, f"Request body({len(data)} bytes) too large, max size: {TXN_MAX_REQ_LEN} bytes. "
                             "See the txn_max_req_len limit.")
    try:
        body = orjson.loads(data) if data.strip() else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPError(400, f"Failed to parse body: {exc}") from None
    except RecursionError:
        raise HTTPError(400, f"Failed to parse body: nested deeper than {MAX_JSON_DEPTH} levels") from None
    if json_depth(body) > MAX_JSON_DEPTH:
        raise HTTPError(400, f"Failed to parse body: nested deeper than {MAX_JSON_DEPTH} levels")
    ops = decode_ops(body)
    headers: dict[str, str] = {}
    if is_read_only(ops):
        if not opts.stale and not agent.consensus.known_leader():
            raise NoLeaderError()
        outcome = txn_endpoint.read(agent.store, ops)
        headers = {"X-Consul-KnownLeader": "true" if agent.consensus.known_leader() else "false",
                   "X-Consul-LastContact": str(agent.consensus.last_contact_ms())}
    else:
        outcome = await txn_endpoint.write(agent.submit, ops, time.time())
    status, body_json = outcome_json(outcome)
    return Reply(body_json, status=status, headers=headers)


router.add("PUT", "/v1/txn", txn)
