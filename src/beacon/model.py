"""Beacon's data model: plain dataclasses with no I/O.

Field names are snake_case. Consul's PascalCase JSON lives only at the HTTP boundary
(`beacon.agent.http.encode`). Every record that the state machine stores can round-trip through
`to_dict`/`from_dict` with only JSON-compatible values, which is what commands, snapshots and the
Raft log carry.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

HealthStatus = Literal["passing", "warning", "critical"]
HEALTH_STATUSES: tuple[str, ...] = ("passing", "warning", "critical")
# Worse statuses sort later: used to aggregate an instance's checks.
STATUS_RANK = {"passing": 0, "warning": 1, "critical": 2, "maintenance": 3}

SERF_CHECK_ID = "serfHealth"
SERF_CHECK_NAME = "Serf Health Status"
SERF_ALIVE_OUTPUT = "Agent alive and reachable"
SERF_DEAD_OUTPUT = "Agent not live or unreachable"
NODE_MAINT_CHECK_ID = "_node_maintenance"
SERVICE_MAINT_PREFIX = "_service_maintenance:"

T = TypeVar("T")


_FIELD_NAMES: dict[type, frozenset[str]] = {}
_FROM_DICT: dict[type, Any] = {}


def _names(cls: type) -> frozenset[str]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    return names


def _from_dict(cls: type[T], data: dict[str, Any]) -> T:
    names = _names(cls)
    if data.keys() == names:  # a to_dict of this class (a snapshot's rows): as it is, positionally
        fn = _FROM_DICT.get(cls)
        if fn is None:
            # Compiled once per class like _to_dict below: a restore builds 344,000 records, and the
            # generic per-key test plus a keyword call were most of its time.
            args = ", ".join(f"d[{f.name!r}]" for f in dataclasses.fields(cls))
            scope: dict[str, Any] = {"cls": cls}
            exec(f"def from_dict(d):\n    return cls({args})\n", scope)  # noqa: S102 - field names only
            fn = _FROM_DICT[cls] = scope["from_dict"]
        return fn(data)  # type: ignore[no-any-return]
    return cls(**{k: v for k, v in data.items() if k in names})


def _copy(value: Any) -> Any:
    """What ``dataclasses.asdict`` does to a field value, for the JSON-shaped values records hold:
    containers copied all the way down, everything else shared (immutable)."""
    t = type(value)
    if t is dict:
        return {k: _copy(v) for k, v in value.items()} if value else {}
    if t is list:
        return [_copy(v) for v in value]
    if t is tuple:
        return tuple(_copy(v) for v in value)
    if t in _SCALARS:
        return value
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else copy.deepcopy(value)


_SCALARS = frozenset({str, int, float, bool, type(None), bytes})


_TO_DICT: dict[type, Any] = {}


def _to_dict(obj: Any) -> dict[str, Any]:
    """``dataclasses.asdict`` for one record, several times faster (a snapshot of a 172,000-instance
    catalog spent most of its time in asdict's generic recursion). Compiled once per class, as
    dataclasses compiles ``__init__``: fields annotated str/int/bool/float are taken as they are,
    the others copied by :func:`_copy`; the keys keep the fields' order."""
    cls = type(obj)
    fn = _TO_DICT.get(cls)
    if fn is None:
        items = ", ".join(f"{f.name!r}: o.{f.name}" if str(f.type) in ("str", "int", "bool", "float")
                          else f"{f.name!r}: _copy(o.{f.name})" for f in dataclasses.fields(cls))
        scope: dict[str, Any] = {"_copy": _copy}
        exec(f"def to_dict(o):\n    return {{{items}}}\n", scope)  # noqa: S102 - field names only
        fn = _TO_DICT[cls] = scope["to_dict"]
    return fn(obj)


@dataclass(slots=True)
class Node:
    node: str
    address: str
    id: str = ""
    datacenter: str = ""
    tagged_addresses: dict[str, str] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    # Indexes say when, not what: equality (the state machine's no-op test) ignores them.
    create_index: int = field(default=0, compare=False)
    modify_index: int = field(default=0, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Node:
        return _from_dict(cls, data)


@dataclass(slots=True)
class Service:
    """A service instance as the catalog stores it (one per node and service ID)."""

    id: str
    service: str
    tags: list[str] = field(default_factory=list)
    address: str = ""
    port: int = 0
    meta: dict[str, str] = field(default_factory=dict)
    tagged_addresses: dict[str, dict[str, Any]] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=lambda: {"Passing": 1, "Warning": 1})
    enable_tag_override: bool = False
    kind: str = ""
    node: str = ""
    # Indexes say when, not what: equality (the state machine's no-op test) ignores them.
    create_index: int = field(default=0, compare=False)
    modify_index: int = field(default=0, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Service:
        return _from_dict(cls, data)


@dataclass(slots=True)
class HealthCheck:
    node: str
    check_id: str
    name: str = ""
    status: str = "critical"
    notes: str = ""
    output: str = ""
    service_id: str = ""
    service_name: str = ""
    service_tags: list[str] = field(default_factory=list)
    type: str = ""
    interval: str = ""
    timeout: str = ""
    exposed_port: int = 0
    definition: dict[str, Any] = field(default_factory=dict)
    # Indexes say when, not what: equality (the state machine's no-op test) ignores them.
    create_index: int = field(default=0, compare=False)
    modify_index: int = field(default=0, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HealthCheck:
        return _from_dict(cls, data)


@dataclass(slots=True)
class KVEntry:
    key: str
    value: bytes | None = None
    flags: int = 0
    session: str = ""
    lock_index: int = 0
    # Indexes say when, not what: equality (the state machine's no-op test) ignores them.
    create_index: int = field(default=0, compare=False)
    modify_index: int = field(default=0, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = _to_dict(self)
        d["value"] = None if self.value is None else self.value.hex()
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KVEntry:
        entry = _from_dict(cls, data)
        if isinstance(entry.value, str):
            entry.value = bytes.fromhex(entry.value)
        return entry


@dataclass(slots=True)
class Session:
    id: str
    node: str
    name: str = ""
    lock_delay_ns: int = 15_000_000_000
    behavior: str = "release"
    ttl: str = ""
    node_checks: list[str] = field(default_factory=lambda: [SERF_CHECK_ID])
    service_checks: list[dict[str, str]] = field(default_factory=list)
    # Indexes say when, not what: equality (the state machine's no-op test) ignores them.
    create_index: int = field(default=0, compare=False)
    modify_index: int = field(default=0, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Session:
        return _from_dict(cls, data)


def aggregate_status(checks: list[HealthCheck]) -> str:
    """Worst status among checks; an instance with no checks is passing."""
    worst = "passing"
    for c in checks:
        if STATUS_RANK.get(c.status, 2) > STATUS_RANK[worst]:
            worst = c.status
    return worst
