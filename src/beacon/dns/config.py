"""DNS settings: one frozen :class:`DNSConfig` with Consul's defaults.

:meth:`DNSConfig.from_consul_json` reads Consul's ``dns_config`` block (snake_case keys, Go duration
strings such as ``"30s"``) plus the related top-level keys (``domain``, ``alt_domain``,
``datacenter``, ``node_name``, ``recursors``). A bad key or value raises :class:`ValueError` naming it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from beacon.durations import parse_duration as _parse_duration

RecursorStrategy = Literal["sequential", "random"]

# Consul's dns_config.max_stale default: 87600h (ten years).
DEFAULT_MAX_STALE = 87600 * 3600.0

def parse_duration(value: Any, key: str) -> float:
    """A Go duration or nanoseconds (beacon.durations), non-negative, with the key in the error."""
    try:
        seconds = _parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"dns_config.{key}: {exc}") from None
    if seconds < 0:
        raise ValueError(f"dns_config.{key}: duration must not be negative, got {value!r}")
    return seconds


def normalize_recursor(addr: str) -> str:
    """``"8.8.8.8"`` -> ``"8.8.8.8:53"``; ``"::1"`` -> ``"[::1]:53"``; keeps an explicit port."""
    addr = addr.strip()
    host, port = addr, "53"
    if addr.startswith("["):
        end = addr.find("]")
        if end < 0:
            raise ValueError(f"recursors: invalid address {addr!r}")
        host, rest = addr[1:end], addr[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"recursors: invalid address {addr!r}")
            port = rest[1:]
    elif addr.count(":") == 1:
        host, port = addr.split(":")
    try:
        ip = ipaddress.ip_address(host)
        port_num = int(port)
    except ValueError:
        raise ValueError(f"recursors: invalid address {addr!r} (expected IP or IP:port)") from None
    if not 0 < port_num < 65536:
        raise ValueError(f"recursors: invalid port in {addr!r}")
    return f"[{ip}]:{port_num}" if ip.version == 6 else f"{ip}:{port_num}"


def split_recursor(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True)
class SOAConfig:
    refresh: int = 3600
    retry: int = 600
    expire: int = 86400
    min_ttl: int = 0


@dataclass(frozen=True)
class DNSConfig:
    """Everything the DNS server reads; defaults are Consul's."""

    domain: str = "consul"
    alt_domain: str = ""
    datacenter: str = "dc1"
    node_name: str = ""
    recursors: tuple[str, ...] = ()
    only_passing: bool = False
    allow_stale: bool = True
    max_stale: float = DEFAULT_MAX_STALE
    node_ttl: float = 0.0
    service_ttl: Mapping[str, float] = field(default_factory=dict)
    udp_answer_limit: int = 3
    a_record_limit: int = 0
    enable_truncate: bool = False
    recursor_timeout: float = 2.0
    recursor_strategy: RecursorStrategy = "sequential"
    disable_compression: bool = False
    enable_additional_node_meta_txt: bool = True
    soa: SOAConfig = field(default_factory=SOAConfig)
    use_cache: bool = False
    cache_max_age: float = 0.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in ("domain", "alt_domain"):
            value = getattr(self, name).strip().strip(".").lower()
            set_(self, name, value)
        if not self.domain:
            raise ValueError("domain: must not be empty")
        set_(self, "datacenter", self.datacenter.lower())
        set_(self, "recursors", tuple(normalize_recursor(r) for r in self.recursors))
        if self.recursor_strategy not in ("sequential", "random"):
            raise ValueError(
                f"dns_config.recursor_strategy: must be \"sequential\" or \"random\", got {self.recursor_strategy!r}")
        if self.udp_answer_limit < 0:
            raise ValueError(f"dns_config.udp_answer_limit: must be >= 0, got {self.udp_answer_limit}")
        if self.a_record_limit < 0:
            raise ValueError(f"dns_config.a_record_limit: must be >= 0, got {self.a_record_limit}")
        if self.recursor_timeout <= 0:
            raise ValueError(f"dns_config.recursor_timeout: must be > 0, got {self.recursor_timeout}")
        set_(self, "service_ttl", {k.lower(): float(v) for k, v in dict(self.service_ttl).items()})

    # ------------------------------------------------------------------ derived values
    def service_ttl_for(self, service: str) -> int:
        """Exact name wins, else the longest ``prefix*`` key (``"*"`` matches all); default 0."""
        ttls = self.service_ttl
        if not ttls:
            return 0
        name = service.lower()
        if name in ttls:
            return int(ttls[name])
        best, best_len = 0.0, -1
        for key, ttl in ttls.items():
            if key.endswith("*") and name.startswith(key[:-1]) and len(key) > best_len:
                best, best_len = ttl, len(key)
        return int(best)

    @property
    def node_ttl_seconds(self) -> int:
        return int(self.node_ttl)

    # ------------------------------------------------------------------ Consul JSON
    @classmethod
    def from_consul_json(cls, dns_config: Mapping[str, Any] | None = None, **top: Any) -> DNSConfig:
        """Build from Consul's ``dns_config`` keys plus top-level ``domain``/``recursors``/..."""
        kw: dict[str, Any] = {}
        top_keys = {"domain", "alt_domain", "datacenter", "node_name", "recursors"}
        for key, value in top.items():
            if key not in top_keys:
                raise ValueError(f"unknown DNS setting {key!r}")
            if key == "recursors":
                if isinstance(value, str) or not isinstance(value, list | tuple):
                    raise ValueError(f"recursors: expected a list of addresses, got {value!r}")
                kw[key] = tuple(value)
            else:
                if not isinstance(value, str):
                    raise ValueError(f"{key}: expected a string, got {value!r}")
                kw[key] = value
        for key, value in (dns_config or {}).items():
            kw.update(_dns_config_item(key, value))
        return cls(**kw)


_BOOL_KEYS = {"allow_stale", "only_passing", "enable_truncate", "disable_compression",
              "enable_additional_node_meta_txt", "use_cache", "prefer_namespace"}
_INT_KEYS = {"udp_answer_limit", "a_record_limit"}
_DURATION_KEYS = {"max_stale", "node_ttl", "recursor_timeout", "cache_max_age"}
_KNOWN_FIELDS = {f.name for f in fields(DNSConfig)}


def _dns_config_item(key: str, value: Any) -> dict[str, Any]:
    if key in _BOOL_KEYS:
        if not isinstance(value, bool):
            raise ValueError(f"dns_config.{key}: expected true or false, got {value!r}")
        return {} if key == "prefer_namespace" else {key: value}
    if key in _INT_KEYS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"dns_config.{key}: expected an integer, got {value!r}")
        return {key: value}
    if key in _DURATION_KEYS:
        return {key: parse_duration(value, key)}
    if key == "recursor_strategy":
        if value not in ("sequential", "random"):
            raise ValueError(f"dns_config.recursor_strategy: must be \"sequential\" or \"random\", got {value!r}")
        return {key: value}
    if key == "service_ttl":
        if not isinstance(value, Mapping):
            raise ValueError(f"dns_config.service_ttl: expected an object, got {value!r}")
        return {key: {str(k): parse_duration(v, f"service_ttl.{k}") for k, v in value.items()}}
    if key == "soa":
        if not isinstance(value, Mapping):
            raise ValueError(f"dns_config.soa: expected an object, got {value!r}")
        soa: dict[str, int] = {}
        for k, v in value.items():
            if k not in ("refresh", "retry", "expire", "min_ttl"):
                raise ValueError(f"unknown key dns_config.soa.{k}")
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**32:
                raise ValueError(f"dns_config.soa.{k}: expected a number of seconds, got {v!r}")
            soa[k] = v
        return {"soa": SOAConfig(**soa)}
    if key in _KNOWN_FIELDS:
        raise ValueError(f"dns_config.{key}: not a dns_config key (set it at the top level)")
    raise ValueError(f"unknown key dns_config.{key}")
