"""Every state-machine command as a frozen record, registered in one table, and its log encoding.

A command is proposed as a record (``KVSet(key=..., value=...)``), crosses the consensus seam and the
server RPC in its log form ``(MessageType, payload dict)`` and is decoded back to the same record
before the state machine applies it, which dispatches on the record's type. The log form is the
one earlier versions wrote (``{"op": "set", "key": ...}`` under ``MessageType.KVS``), so a data dir
or an etcd log written by them replays through this table unchanged, and a server of the previous
version can still apply what this one proposes (every field is written, with the defaults the old
readers assumed).

Records are values: two equal records are the same command. Nested documents (a session, a query,
a config entry, an ACL token) stay JSON objects; their own decoders live with their command family.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, TypeVar

from beacon.errors import Invalid


class MessageType(IntEnum):
    """Append-only: never renumber, never reuse."""

    REGISTER = 1
    DEREGISTER = 2
    KVS = 3
    SESSION = 4
    TXN = 5
    NOOP = 6
    CHECK_STATUS = 7
    SNAPSHOT_RESTORE = 8
    PREPARED_QUERY = 9   # beacon.server.queries
    CONFIG_ENTRY = 10    # beacon.server.config_entries
    TOMBSTONE_REAP = 11  # beacon.server.tombstones
    ACL = 12             # beacon.acl.state
    SNAPSHOT_RESTORE_CHUNKS = 13  # beacon.server.etcd_restore
    AUTOPILOT = 14       # beacon.server.autopilot
    CONNECT_CA = 15      # beacon.server.connect_ca


# A message type with this bit set may be skipped by a replica that does not know it (Consul's rule).
IGNORE_UNKNOWN_FLAG = 128

LogForm = tuple[int, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Record:
    """Base of every command record. ``TYPE``/``OP`` place it in the log form."""

    TYPE: ClassVar[MessageType]
    OP: ClassVar[str | None] = None


class UnknownCommandType(Exception):
    """A message type this version has no record for (a newer proposer, or corruption)."""


# (message type, op or None) -> record class; families without ops have op None.
_TABLE: dict[tuple[int, str | None], type[Record]] = {}
# Message types whose records carry an "op"; an unknown op is the family's Invalid error.
_OP_ERRORS: dict[int, str] = {}
_FIELDS: dict[type[Record], tuple[str, ...]] = {}

C = TypeVar("C", bound=type[Record])


def command(mtype: MessageType, op: str | None = None) -> Callable[[C], C]:
    def register(cls: C) -> C:
        key = (int(mtype), op)
        if key in _TABLE:
            raise RuntimeError(f"duplicate command record for {mtype!r} op {op!r}")
        cls.TYPE = mtype
        cls.OP = op
        _TABLE[key] = cls
        _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
        return cls
    return register


def records() -> dict[tuple[int, str | None], type[Record]]:
    return dict(_TABLE)


def encode(record: Record) -> LogForm:
    """The log form: what consensus stores and the server RPC carries."""
    payload: dict[str, Any] = {} if record.OP is None else {"op": record.OP}
    for name in _FIELDS[type(record)]:
        payload[name] = getattr(record, name)
    return int(record.TYPE), payload


def decode(mtype: int, payload: dict[str, Any]) -> Record:
    """The record for a log entry. Raises UnknownCommandType for a message type not in the table,
    Invalid for an unknown op and TypeError for missing or unknown fields; the state machine turns
    the last two into an error result, the same on every replica."""
    base = mtype & ~IGNORE_UNKNOWN_FLAG
    if not isinstance(payload, dict):
        raise TypeError(f"command payload must be an object, not {type(payload).__name__}")
    if base in _OP_ERRORS:
        op = payload.get("op")
        cls = _TABLE.get((base, op))
        if cls is None:
            raise Invalid(_OP_ERRORS[base].format(op=op))
        fields = {k: v for k, v in payload.items() if k != "op"}
    else:
        cls = _TABLE.get((base, None))
        if cls is None:
            raise UnknownCommandType(f"unknown command type {mtype}")
        fields = payload
    names = _FIELDS[cls]
    # Keys this version does not know are ignored, as the dict readers before it did.
    return cls(**{k: v for k, v in fields.items() if k in names})


def known_type(mtype: int) -> bool:
    return (mtype & ~IGNORE_UNKNOWN_FLAG) in {t for t, _ in _TABLE}


def _ops(mtype: MessageType, message: str) -> None:
    _OP_ERRORS[int(mtype)] = message


_ops(MessageType.KVS, 'Invalid KV operation "{op}"')
_ops(MessageType.SESSION, 'Invalid session operation "{op}"')
_ops(MessageType.PREPARED_QUERY, 'Invalid prepared query operation "{op}"')
_ops(MessageType.CONFIG_ENTRY, 'Invalid config entry operation "{op}"')
_ops(MessageType.ACL, 'Invalid ACL operation "{op}"')
_ops(MessageType.AUTOPILOT, 'Invalid autopilot operation "{op}"')
_ops(MessageType.CONNECT_CA, 'Invalid Connect CA operation "{op}"')


# ---------------------------------------------------------------------------------------- catalog
@command(MessageType.REGISTER)
@dataclass(frozen=True, slots=True)
class Register(Record):
    """A node, optionally with one service and checks (Consul's RegisterRequest)."""

    node: str = ""
    address: str = ""
    id: str = ""
    datacenter: str = ""
    tagged_addresses: dict[str, str] | None = None
    node_meta: dict[str, str] | None = None
    service: dict[str, Any] | None = None        # Service.to_dict()
    checks: list[dict[str, Any]] | None = None   # HealthCheck.to_dict() each
    skip_node_update: bool = False


@command(MessageType.DEREGISTER)
@dataclass(frozen=True, slots=True)
class Deregister(Record):
    """The node, or only one of its services or checks."""

    node: str = ""
    service_id: str = ""
    check_id: str = ""


@command(MessageType.CHECK_STATUS)
@dataclass(frozen=True, slots=True)
class CheckStatus(Record):
    node: str
    check_id: str
    status: str
    output: str | None = None   # None keeps the check's output


@command(MessageType.NOOP)
@dataclass(frozen=True, slots=True)
class Noop(Record):
    pass


@command(MessageType.TOMBSTONE_REAP)
@dataclass(frozen=True, slots=True)
class TombstoneReap(Record):
    index: int


# ---------------------------------------------------------------------------------------- KV
@command(MessageType.KVS, "set")
@dataclass(frozen=True, slots=True)
class KVSet(Record):
    key: str = ""
    value: bytes | None = None
    flags: int = 0


@command(MessageType.KVS, "cas")
@dataclass(frozen=True, slots=True)
class KVCas(Record):
    index: int
    key: str = ""
    value: bytes | None = None
    flags: int = 0


@command(MessageType.KVS, "delete")
@dataclass(frozen=True, slots=True)
class KVDelete(Record):
    key: str = ""


@command(MessageType.KVS, "delete-cas")
@dataclass(frozen=True, slots=True)
class KVDeleteCas(Record):
    index: int
    key: str = ""


@command(MessageType.KVS, "delete-tree")
@dataclass(frozen=True, slots=True)
class KVDeleteTree(Record):
    key: str = ""


@command(MessageType.KVS, "lock")
@dataclass(frozen=True, slots=True)
class KVLock(Record):
    session: str
    key: str = ""
    value: bytes | None = None
    flags: int = 0
    now: float = 0.0


@command(MessageType.KVS, "unlock")
@dataclass(frozen=True, slots=True)
class KVUnlock(Record):
    session: str
    key: str = ""
    value: bytes | None = None
    flags: int = 0


# ---------------------------------------------------------------------------------------- sessions
@command(MessageType.SESSION, "create")
@dataclass(frozen=True, slots=True)
class SessionCreate(Record):
    session: dict[str, Any]   # Session.to_dict(); the proposer picked the ID
    now: float


@command(MessageType.SESSION, "destroy")
@dataclass(frozen=True, slots=True)
class SessionDestroy(Record):
    id: str
    now: float


@command(MessageType.SESSION, "renew")
@dataclass(frozen=True, slots=True)
class SessionRenew(Record):
    id: str
    now: float


@command(MessageType.SESSION, "expire")
@dataclass(frozen=True, slots=True)
class SessionExpire(Record):
    ids: list[str]
    now: float


@command(MessageType.TXN)
@dataclass(frozen=True, slots=True)
class Txn(Record):
    ops: list[dict[str, Any]]   # decoded by beacon.agent.http.txn's parser, see beacon.server.txn
    now: float = 0.0


@command(MessageType.SNAPSHOT_RESTORE)
@dataclass(frozen=True, slots=True)
class SnapshotRestore(Record):
    snapshot: dict[str, Any]   # StateStore.snapshot()
    now: float = 0.0


@command(MessageType.SNAPSHOT_RESTORE_CHUNKS)
@dataclass(frozen=True, slots=True)
class SnapshotRestoreChunks(Record):
    """A restore on the etcd log whose state is in etcd chunk keys (too large for one log entry):
    the etcd log reads and verifies them and applies a SnapshotRestore in its place."""
    name: str      # the chunk set, beacon.server.etcd_restore.set_prefix
    chunks: int
    size: int
    sha256: str    # of the concatenated chunks
    now: float = 0.0


# ---------------------------------------------------------------------------------------- queries, config
@command(MessageType.PREPARED_QUERY, "set")
@dataclass(frozen=True, slots=True)
class QuerySet(Record):
    query: dict[str, Any]


@command(MessageType.PREPARED_QUERY, "delete")
@dataclass(frozen=True, slots=True)
class QueryDelete(Record):
    id: str


@command(MessageType.CONFIG_ENTRY, "set")
@dataclass(frozen=True, slots=True)
class ConfigSet(Record):
    entry: dict[str, Any]
    cas: int | None = None


@command(MessageType.CONFIG_ENTRY, "delete")
@dataclass(frozen=True, slots=True)
class ConfigDelete(Record):
    kind: str
    name: str
    cas: int | None = None


@command(MessageType.AUTOPILOT, "set")
@dataclass(frozen=True, slots=True)
class AutopilotSet(Record):
    config: dict[str, Any]
    cas: int | None = None


@command(MessageType.CONNECT_CA, "init")
@dataclass(frozen=True, slots=True)
class CAInit(Record):
    root: dict[str, Any]
    key: str
    trust_domain: str


# ---------------------------------------------------------------------------------------- ACL
@command(MessageType.ACL, "bootstrap")
@dataclass(frozen=True, slots=True)
class ACLBootstrap(Record):
    token: dict[str, Any]


@command(MessageType.ACL, "initial_management")
@dataclass(frozen=True, slots=True)
class ACLInitialManagement(Record):
    token: dict[str, Any]


@command(MessageType.ACL, "token_set")
@dataclass(frozen=True, slots=True)
class ACLTokenSet(Record):
    token: dict[str, Any]


@command(MessageType.ACL, "policy_set")
@dataclass(frozen=True, slots=True)
class ACLPolicySet(Record):
    policy: dict[str, Any]


@command(MessageType.ACL, "role_set")
@dataclass(frozen=True, slots=True)
class ACLRoleSet(Record):
    role: dict[str, Any]


@command(MessageType.ACL, "token_delete")
@dataclass(frozen=True, slots=True)
class ACLTokenDelete(Record):
    id: str


@command(MessageType.ACL, "policy_delete")
@dataclass(frozen=True, slots=True)
class ACLPolicyDelete(Record):
    id: str


@command(MessageType.ACL, "role_delete")
@dataclass(frozen=True, slots=True)
class ACLRoleDelete(Record):
    id: str


# Auth methods and binding rules (beacon.acl.auth_state).
@command(MessageType.ACL, "auth_method_set")
@dataclass(frozen=True, slots=True)
class ACLAuthMethodSet(Record):
    method: dict[str, Any]


@command(MessageType.ACL, "auth_method_delete")
@dataclass(frozen=True, slots=True)
class ACLAuthMethodDelete(Record):
    name: str


@command(MessageType.ACL, "binding_rule_set")
@dataclass(frozen=True, slots=True)
class ACLBindingRuleSet(Record):
    rule: dict[str, Any]


@command(MessageType.ACL, "binding_rule_delete")
@dataclass(frozen=True, slots=True)
class ACLBindingRuleDelete(Record):
    id: str


@command(MessageType.ACL, "token_reap")
@dataclass(frozen=True, slots=True)
class ACLTokenReap(Record):
    """Delete these tokens if they expired by ``now`` (the leader's clock, carried so apply stays pure)."""

    ids: list[str]
    now: float
