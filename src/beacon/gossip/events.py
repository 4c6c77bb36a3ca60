"""Consul's user events (/v1/event/fire) carried as Serf user events.

Consul gossips an event as the Serf user event ``consul:event:<name>`` whose payload is the msgpack
encoding of its UserEvent record (ID, Name, Payload, NodeFilter, ServiceFilter, TagFilter, Version,
LTime). Receivers decode it, apply the filters to themselves and keep it in their event buffer. The
decoder treats the payload as untrusted: msgpack only (no pickle), a size cap, and every field's type
checked, so a malformed event is dropped rather than raising into the event pump.
"""

from __future__ import annotations

from typing import Any

import msgpack

CONSUL_EVENT_PREFIX = "consul:event:"
USER_EVENT_VERSION = 1
MAX_EVENT_BYTES = 64 * 1024
_STR_FIELDS = ("ID", "Name", "NodeFilter", "ServiceFilter", "TagFilter")


def encode_user_event(event: dict[str, Any]) -> tuple[str, bytes]:
    """(serf event name, payload) for a Consul user event given as its JSON-cased fields; the event's
    Payload is bytes (or None)."""
    body = {k: event.get(k, "") for k in _STR_FIELDS}
    body["Payload"] = event.get("Payload") or None
    body["Version"] = int(event.get("Version", USER_EVENT_VERSION))
    body["LTime"] = int(event.get("LTime", 0))
    return CONSUL_EVENT_PREFIX + str(body["Name"]), msgpack.packb(body, use_bin_type=True)


def decode_user_event(serf_name: str, payload: bytes, ltime: int = 0) -> dict[str, Any] | None:
    """The Consul user event a Serf user event carries, or None if it is not one (or is malformed).
    LTime is the Serf Lamport time the event arrived with (Consul overwrites it the same way)."""
    if not serf_name.startswith(CONSUL_EVENT_PREFIX) or len(payload) > MAX_EVENT_BYTES:
        return None
    try:
        body = msgpack.unpackb(payload, raw=False, strict_map_key=True)  # size capped above
    except Exception:  # msgpack raises several types for malformed input; all mean "not an event"
        return None
    if not isinstance(body, dict):
        return None
    out: dict[str, Any] = {}
    for k in _STR_FIELDS:
        v = body.get(k, "")
        if not isinstance(v, str):
            return None
        out[k] = v
    p = body.get("Payload")
    if p is not None and not isinstance(p, bytes):
        return None
    if out["Name"] != serf_name[len(CONSUL_EVENT_PREFIX):]:
        return None
    out["Payload"] = p
    version = body.get("Version", USER_EVENT_VERSION)
    out["Version"] = version if isinstance(version, int) else USER_EVENT_VERSION
    out["LTime"] = ltime
    return out
