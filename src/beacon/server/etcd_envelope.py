"""Decoding the replicated log's envelopes (:mod:`beacon.server.etcd_log`): every server decodes
every entry, so this is on the apply path of every write."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from beacon.server.durable import decode


def decode_envelope(data: bytes) -> Any:
    """durable.decode for log entries: orjson, then bytes put back where the encoder wrote
    ``{"$b": base64}`` (a KV value in every KV write), which only command payloads hold. The
    standard library's object hook cost about 3x this on a small envelope; anything orjson
    refuses goes to durable.decode."""
    if len(data) > 1 << 16:
        return decode(data)  # large (restores): durable.decode pauses the collector for those
    try:
        env = orjson.loads(data)
    except orjson.JSONDecodeError:
        return decode(data)
    if b'"$b"' in data and isinstance(env, dict):
        for e in env.get("b", ()):
            c = e.get("c") if isinstance(e, dict) else None
            if isinstance(c, list) and len(c) == 2:
                c[1] = _unwrap(c[1])
    return env


def _unwrap(obj: Any) -> Any:
    if type(obj) is dict:
        if len(obj) == 1 and "$b" in obj:
            return base64.b64decode(obj["$b"])
        for k, v in obj.items():
            t = type(v)
            if t is dict or t is list:
                obj[k] = _unwrap(v)
    elif type(obj) is list:
        for i, v in enumerate(obj):
            t = type(v)
            if t is dict or t is list:
                obj[i] = _unwrap(v)
    return obj
