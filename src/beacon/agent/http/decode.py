"""Request-body decoding with Consul's leniency.

Keys match case-insensitively and snake_case aliases are accepted (``tagged_addresses`` ==
``TaggedAddresses``), as Go's mapstructure does for Consul. :class:`Fields` wraps one JSON object with
that lookup; nested user maps (``Meta``, ``Header``) keep their keys as sent.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from beacon.durations import parse_duration
from beacon.model import Service
from beacon.numbers import INT64_MIN, UINT64_MAX


class DecodeError(Exception):
    """400 with this message."""


def _norm(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


class Fields:
    def __init__(self, obj: Any, what: str = "body") -> None:
        if not isinstance(obj, dict):
            raise DecodeError(f"Request decode failed: {what} must be a JSON object")
        self.raw = obj
        self._map = {_norm(k): v for k, v in obj.items()}

    def has(self, *names: str) -> bool:
        return any(_norm(n) in self._map for n in names)

    def get(self, *names: str, default: Any = None) -> Any:
        for n in names:
            v = self._map.get(_norm(n))
            if v is not None:
                return v
        return default

    def str(self, *names: str, default: str = "") -> str:
        v = self.get(*names)
        if v is None:
            return default
        if not isinstance(v, str):
            raise DecodeError(f"Request decode failed: {names[0]} must be a string")
        return v

    def int(self, *names: str, default: int = 0) -> int:
        v = self.get(*names)
        if v is None:
            return default
        # A Go int64 or uint64 field: beyond it Consul refuses the body (and orjson could not encode
        # the stored value back, so every later read of it would fail).
        if isinstance(v, bool) or not isinstance(v, int | float) or not INT64_MIN <= v <= UINT64_MAX or int(v) != v:
            raise DecodeError(f"Request decode failed: {names[0]} must be an integer")
        return int(v)

    def uint(self, *names: str, default: int = 0) -> int:
        """A Go uint64 field (KV flags, indexes): a negative number does not decode."""
        v = self.int(*names, default=default)
        if v < 0:
            raise DecodeError(f"Request decode failed: {names[0]} must be an unsigned integer")
        return v

    def bool(self, *names: str, default: bool = False) -> bool:
        v = self.get(*names)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise DecodeError(f"Request decode failed: {names[0]} must be a boolean")
        return v

    def str_list(self, *names: str) -> list[str]:
        v = self.get(*names)
        if v is None:
            return []
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise DecodeError(f"Request decode failed: {names[0]} must be a list of strings")
        return list(v)

    def str_map(self, *names: str) -> dict[str, str]:
        v = self.get(*names)
        if v is None:
            return {}
        if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
            raise DecodeError(f"Request decode failed: {names[0]} must be a map of strings")
        return dict(v)

    def duration(self, *names: str) -> float | None:
        v = self.get(*names)
        if v is None or v == "":
            return None
        try:
            return parse_duration(v)
        except ValueError as exc:
            raise DecodeError(f"Request decode failed: {names[0]}: {exc}") from exc

    def list(self, *names: str) -> list[Any]:
        """A JSON array (empty when absent), its items left to the caller."""
        v = self.get(*names)
        if v is None:
            return []
        if not isinstance(v, list):
            raise DecodeError(f"Request decode failed: {names[0]} must be a list")
        return v

    def obj(self, *names: str) -> Fields | None:
        v = self.get(*names)
        return None if v is None else Fields(v, names[0])


_META_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def validate_meta(meta: dict[str, str], what: str = "Service") -> None:
    if len(meta) > 64:
        raise DecodeError(f"Invalid {what} Meta: Node metadata cannot contain more than 64 key/value pairs")
    for k, v in meta.items():
        if not k:
            raise DecodeError(f"Invalid {what} Meta: Key cannot be blank")
        if len(k) > 128:
            raise DecodeError(f"Invalid {what} Meta: Key is too long (limit: 128 characters)")
        if not _META_KEY.match(k):
            raise DecodeError(f"Invalid {what} Meta: Key contains invalid characters")
        if k.startswith("consul-"):
            raise DecodeError(f"Invalid {what} Meta: Key prefix 'consul-' is reserved for internal use")
        if len(v) > 512:
            raise DecodeError(f"Invalid {what} Meta: Value is too long (limit: 512 characters)")


def decode_service(obj: Any) -> tuple[Service, list[dict[str, Any]]]:
    """An agent service definition -> (Service, raw embedded check objects)."""
    f = Fields(obj)
    name = f.str("Name")
    if not name:
        raise DecodeError("Missing service name")
    address = f.str("Address")
    if address:
        try:
            if ipaddress.ip_address(address).is_unspecified:
                raise DecodeError("Invalid service address")
        except ValueError:
            pass
    meta = f.str_map("Meta")
    validate_meta(meta)
    weights = {"Passing": 1, "Warning": 1}
    w = f.obj("Weights")
    if w is not None:
        weights = {"Passing": w.int("Passing", default=1), "Warning": w.int("Warning", default=1)}
        if weights["Passing"] < 1:
            raise DecodeError("Invalid Weights: Passing must be greater than 0")
        if weights["Warning"] < 0:
            raise DecodeError("Invalid Weights: Warning must be greater or equal than 0")
    tagged: dict[str, dict[str, Any]] = {}
    ta = f.get("TaggedAddresses")
    if ta is not None:
        if not isinstance(ta, dict):
            raise DecodeError("Request decode failed: TaggedAddresses must be an object")
        for k, v in ta.items():
            tf = Fields(v, f"TaggedAddresses.{k}")
            tagged[k] = {"Address": tf.str("Address"), "Port": tf.int("Port")}
    port = f.int("Port")
    if not 0 <= port <= 65535:
        raise DecodeError("Invalid service port")
    svc = Service(
        id=f.str("ID") or name, service=name, tags=f.str_list("Tags"), address=address,
        port=port, meta=meta, tagged_addresses=tagged, weights=weights,
        enable_tag_override=f.bool("EnableTagOverride"), kind=f.str("Kind"),
    )
    checks: list[dict[str, Any]] = []
    one = f.get("Check")
    if isinstance(one, dict) and one:
        checks.append(one)
    many = f.get("Checks")
    if many is not None:
        if not isinstance(many, list):
            raise DecodeError("Request decode failed: Checks must be a list")
        checks += [c for c in many if isinstance(c, dict) and c]
    return svc, checks
