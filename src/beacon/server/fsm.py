"""The replicated state machine: catalog (nodes, services, checks), KV and sessions.

The KV table's writes and reads live in :mod:`beacon.server.fsm_kv` (a mixin of the store).

Every write is a command record (:mod:`beacon.server.commands`) applied by :meth:`StateStore.apply`,
which dispatches on the record's type; a command in its log form ``(MessageType, payload)`` is
decoded through the same table first. Apply is
pure and deterministic: no clock, no randomness, no I/O. A command carries any time or ID it needs,
filled in by the proposer. Every replica applying the same commands in the same order reaches the
same state and the same indexes.

Indexes (Consul's rules):

* ``self.index`` advances for every applied command (by one, or to the etcd revision that carried it).
* Every row keeps ``create_index``/``modify_index``. A write that changes nothing keeps the old
  ``modify_index`` and wakes nobody.
* Tables keep their own index (``nodes``, ``services``, ``checks``, ``kvs``, ``sessions``); each service
  name, node and KV key keeps one too, so a blocking query can wait on exactly what it reads.
* Deleting a KV key leaves a tombstone with the delete's index, so a prefix read's index never goes
  backwards.

Reads return ``(index, result)``. After each apply the store reports the *watch keys* that changed
(see :mod:`beacon.server.watch`) to ``on_change``; that is how blocking queries wake.

Errors are returned as the command's result (a :mod:`beacon.errors` domain error), never raised out of apply, so a bad
command cannot make one replica diverge from the others.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from beacon.errors import BeaconError, Failed, Invalid, NotFound
from beacon.model import (
    SERF_CHECK_ID,
    STATUS_RANK,
    HealthCheck,
    KVEntry,
    Node,
    Service,
    Session,
)
from beacon.server import commands as cmd
from beacon.server import gcpause
from beacon.server.commands import (  # noqa: F401 (MessageType and the flag are re-exported)
    IGNORE_UNKNOWN_FLAG,
    LogForm,
    MessageType,
    Record,
    UnknownCommandType,
)
from beacon.server.durable import DecodedRows
from beacon.server.fsm_kv import KVState

# The log form of a command, what consensus and the server RPC carry (see beacon.server.commands).
Command = LogForm
ChangeCallback = Callable[[int, set[str]], None]


@dataclass(slots=True)
class ApplyResult:
    index: int
    value: Any = None
    error: BeaconError | None = None


_CATALOG_TABLES = frozenset({"nodes", "services", "checks"})


def _lower(name: str) -> str:
    return name.lower()


def _records(rows: list[Any], cls: Any) -> Iterable[Any]:
    """A snapshot's rows as records of ``cls``: rows decoded for this restore
    (:class:`~beacon.server.durable.DecodedRows`) as they are, anything else (dicts, or another
    store's records) built afresh, since the store will own and index them."""
    if type(rows) is DecodedRows:
        return rows
    return (cls.from_dict(r if type(r) is dict else r.to_dict()) for r in rows)


class StateStore(KVState):
    """Indexed, snapshot-able state with a lock so reads on one thread see whole applies."""

    def __init__(self, on_change: ChangeCallback | None = None) -> None:
        self.lock = threading.RLock()
        self.on_change = on_change
        # Bumped by every restore: a cached view stamped with table indexes is only valid within
        # one generation (a restored snapshot can reuse an index for different content).
        self.generation = 0
        # Moves (after the apply is complete) with every catalog change and every restore; never
        # repeats. Caches of catalog answers (DNS) compare it on their hot path. catalog_index
        # cannot serve: it is floored at 1 and goes back with a restored older snapshot.
        self.catalog_version = 0
        self._handlers: dict[type[Record], Callable[[int, Any], Any]] = {}
        self._types: set[int] = set()
        self._register_handlers()
        self._reset()

    # ------------------------------------------------------------------ plumbing
    def _reset(self) -> None:
        self.index = 0
        self.tables: dict[str, int] = {
            "nodes": 0, "services": 0, "checks": 0, "kvs": 0, "sessions": 0,
        }
        self.nodes: dict[str, Node] = {}
        self.services: dict[tuple[str, str], Service] = {}
        self.services_by_node: dict[str, set[str]] = {}
        self.services_by_name: dict[str, set[tuple[str, str]]] = {}
        self.checks: dict[tuple[str, str], HealthCheck] = {}
        self.checks_by_node: dict[str, set[str]] = {}
        # Node keys that have (or had: a superset, pruned by readers that verify) a serfHealth check:
        # the leader's membership reconcile reads these few instead of walking every node (0.1-0.5 s
        # of its event loop every 5 s at 10,000 nodes).
        self.serf_nodes: set[str] = set()
        self.service_index: dict[str, int] = {}
        self.node_index: dict[str, int] = {}
        self.kv: dict[str, KVEntry] = {}
        self.kv_keys: list[str] = []
        self.tombstones: dict[str, int] = {}
        # Reaped tombstones' highest index: list indexes never drop below it (Consul's tombstone GC).
        self.tombstone_floor = 0
        self.sessions: dict[str, Session] = {}
        # key -> time (seconds, proposer's clock) before which the key cannot be locked again.
        self.lock_delays: dict[str, float] = {}
        # session id -> wall-clock time (proposer's) after which a TTL session may be expired.
        self.session_expires: dict[str, float] = {}
        # session id -> keys it holds locked (derived from kv; rebuilt on restore).
        self.session_keys: dict[str, set[str]] = {}
        self._reset_derived()
        self._changes: set[str] = set()
        # Service names whose instances (not just their checks) changed in this apply: only their tag
        # unions need recomputing (a health change leaves every service's tags as they were).
        self._tags_dirty: set[str] = set()
        # While a transaction that may roll back runs: (map, key, value before or None) for every
        # per-service and per-node index it sets, so its undo need not copy the two whole maps.
        self.index_journal: list[tuple[dict[str, int], str, int | None]] | None = None
        # Tables of later command families (prepared queries, config entries): name -> {key: JSON row}.
        self.extra: dict[str, dict[str, Any]] = {}

    def _reset_derived(self) -> None:
        # Service display name -> union of its instances' tags (/v1/catalog/services), kept up to
        # date per changed service name after each apply so no read walks every service.
        self.service_tags: dict[str, list[str]] = {}
        self._service_displays: dict[str, list[str]] = {}

    def _register_handlers(self) -> None:
        self.register_handlers({
            cmd.Register: self._apply_register,
            cmd.Deregister: self._apply_deregister,
            cmd.KVSet: self._apply_kv_set,
            cmd.KVCas: lambda idx, c: self.kv_cas(idx, c.key, c.value, c.flags, c.index),
            cmd.KVDelete: self._apply_kv_delete,
            cmd.KVDeleteCas: lambda idx, c: self.kv_delete_cas(idx, c.key, c.index),
            cmd.KVDeleteTree: self._apply_kv_delete_tree,
            cmd.KVLock: lambda idx, c: self.kv_lock(idx, c.key, c.value, c.flags, c.session, c.now),
            cmd.KVUnlock: lambda idx, c: self.kv_unlock(idx, c.key, c.value, c.flags, c.session),
            cmd.Noop: lambda idx, c: None,
            cmd.CheckStatus: self._apply_check_status,
            cmd.TombstoneReap: self._apply_tombstone_reap,
            cmd.SnapshotRestoreChunks: self._apply_unresolved_restore,
        })

    def register_handlers(self, table: dict[type[Any], Callable[[int, Any], Any]]) -> None:
        """Install the apply function of each record type (command families outside this module:
        sessions, txn, queries, config entries, ACLs). Each record type has exactly one."""
        for record_type, fn in table.items():
            if record_type in self._handlers:
                raise RuntimeError(f"duplicate handler for {record_type.__name__}")
            self._handlers[record_type] = fn
            self._types.add(int(record_type.TYPE))

    def apply(self, command: Record | LogForm, index: int | None = None) -> ApplyResult:
        """Apply one command (a record, or its log form); return its result. Errors are results,
        not exceptions.

        ``index`` is the log position when the log numbers its entries itself (etcd revisions, which
        have gaps); without it the index advances by one. It never goes backwards."""
        mtype = int(command.TYPE) if isinstance(command, Record) else int(command[0])
        with self.lock:
            if (mtype & ~IGNORE_UNKNOWN_FLAG) not in self._types:
                if mtype & IGNORE_UNKNOWN_FLAG:
                    self.index = max(self.index + 1, index or 0)
                    return ApplyResult(self.index)
                raise RuntimeError(f"unknown command type {mtype}; refusing to diverge")
            self.index = max(self.index + 1, index or 0)
            idx = self.index
            self._changes = set()
            try:
                record = command if isinstance(command, Record) else cmd.decode(mtype, command[1])
                value = self._handlers[type(record)](idx, record)
                result = ApplyResult(idx, value)
            except BeaconError as exc:
                result = ApplyResult(idx, None, exc)
            except (TypeError, KeyError, ValueError, AttributeError, UnknownCommandType) as exc:
                # A malformed payload fails the same way on every replica: an error result, not a crash.
                result = ApplyResult(idx, None, Invalid(f"invalid command: {exc!r}"))
            changes = self._changes
            self._changes = set()
            self._refresh_derived(changes)
            self._tags_dirty = set()
        if changes and self.on_change is not None:
            self.on_change(idx, changes)
        return result

    def _refresh_derived(self, changes: set[str]) -> None:
        if not changes.isdisjoint(_CATALOG_TABLES):
            self.catalog_version += 1
        for name_key in self._tags_dirty:
            self.refresh_service_tags(name_key)

    def refresh_service_tags(self, name_key: str) -> None:
        for display in self._service_displays.pop(name_key, ()):
            self.service_tags.pop(display, None)
        out: dict[str, list[str]] = {}
        for key in sorted(self.services_by_name.get(name_key, ())):
            svc = self.services[key]
            tags = out.setdefault(svc.service, [])
            for t in svc.tags:
                if t not in tags:
                    tags.append(t)
        if out:
            self._service_displays[name_key] = list(out)
            self.service_tags.update(out)

    def touch(self, *keys: str) -> None:
        """Record watch keys this apply changed (command families call it while applying)."""
        self._changes.update(keys)

    def discard_changes(self) -> None:
        """Forget this apply's watch keys (a rolled-back transaction changed nothing)."""
        self._changes = set()
        self._tags_dirty = set()

    def bump_table(self, name: str, idx: int) -> None:
        self.tables[name] = idx
        self.touch(name)

    def _bump_service(self, name: str, idx: int) -> None:
        key = _lower(name)
        if self.index_journal is not None:
            self.index_journal.append((self.service_index, key, self.service_index.get(key)))
        self.service_index[key] = idx
        self.touch("svc:" + key)

    def _bump_node(self, node: str, idx: int) -> None:
        key = _lower(node)
        if self.index_journal is not None:
            self.index_journal.append((self.node_index, key, self.node_index.get(key)))
        self.node_index[key] = idx
        self.touch("node:" + key)

    def _bump_services_on_node(self, node_key: str, idx: int) -> None:
        for sid in self.services_by_node.get(node_key, ()):
            self._bump_service(self.services[(node_key, sid)].service, idx)

    @property
    def catalog_index(self) -> int:
        t = self.tables
        return max(t["nodes"], t["services"], t["checks"], 1)

    # ------------------------------------------------------------------ catalog writes
    def _apply_register(self, idx: int, c: cmd.Register) -> bool:
        node_name = c.node or ""
        if not node_name:
            raise Failed("Must provide node")
        node_key = _lower(node_name)
        existing = self.nodes.get(node_key)
        if not c.skip_node_update or existing is None:
            address = c.address or ""
            if not address and existing is None:
                raise Failed("Must provide address if SkipNodeUpdate is not set")
            self.ensure_node(idx, Node(
                node=node_name,
                address=address or (existing.address if existing else ""),
                id=c.id or (existing.id if existing else ""),
                datacenter=c.datacenter or "",
                tagged_addresses=dict(c.tagged_addresses or {}),
                meta=dict(c.node_meta or {}),
            ))
        svc = c.service
        if svc:
            service = Service.from_dict(svc)
            if not service.service:
                raise Failed("Must provide service name")
            service.id = service.id or service.service
            service.node = self.nodes[node_key].node
            self.ensure_service(idx, node_key, service)
        for chk in c.checks or []:
            check = HealthCheck.from_dict({**chk, "node": self.nodes[node_key].node})
            self.ensure_check(idx, node_key, check)
        return True

    def ensure_node(self, idx: int, node: Node) -> None:
        key = _lower(node.node)
        old = self.nodes.get(key)
        if old is not None:
            if old == node:
                return
            node.create_index = old.create_index
        else:
            node.create_index = idx
        node.modify_index = idx
        self.nodes[key] = node
        self.bump_table("nodes", idx)
        self._bump_node(node.node, idx)
        self._bump_services_on_node(key, idx)
        if old is not None and old.address != node.address:
            # Node address is part of every service answer on it.
            self.bump_table("services", idx)

    def ensure_service(self, idx: int, node_key: str, service: Service) -> None:
        key = (node_key, service.id)
        old = self.services.get(key)
        if old is not None:
            if old == service:
                return
            service.create_index = old.create_index
            if _lower(old.service) != _lower(service.service):
                self._unindex_service_name(old)
                self._bump_service(old.service, idx)
        else:
            service.create_index = idx
        service.modify_index = idx
        self.services[key] = service
        self._tags_dirty.add(_lower(service.service))
        self.services_by_node.setdefault(node_key, set()).add(service.id)
        self.services_by_name.setdefault(_lower(service.service), set()).add(key)
        self.bump_table("services", idx)
        self._bump_service(service.service, idx)
        self._bump_node(service.node, idx)
        # Checks carry the service's name and tags. A new record, as for every change: the store
        # never mutates a record it holds (snapshot(records=True) relies on it).
        for cid in self.checks_by_node.get(node_key, set()):
            chk = self.checks[(node_key, cid)]
            if chk.service_id == service.id and (
                    chk.service_name != service.service or chk.service_tags != service.tags):
                self.checks[(node_key, cid)] = dataclasses.replace(
                    chk, service_name=service.service, service_tags=list(service.tags), modify_index=idx)
                self.bump_table("checks", idx)

    def _unindex_service_name(self, svc: Service) -> None:
        name_key = _lower(svc.service)
        self._tags_dirty.add(name_key)
        members = self.services_by_name.get(name_key)
        if members is not None:
            members.discard((_lower(svc.node), svc.id))
            if not members:
                del self.services_by_name[name_key]

    def ensure_check(self, idx: int, node_key: str, check: HealthCheck) -> None:
        if not check.check_id:
            check.check_id = check.name
        if not check.check_id:
            raise Failed("Missing check ID")
        if check.status not in STATUS_RANK or check.status == "maintenance":
            raise Failed(f"Invalid check status: '{check.status}'")
        if check.service_id:
            svc = self.services.get((node_key, check.service_id))
            if svc is None:
                raise Failed(f"Missing service registration for ServiceID \"{check.service_id}\"")
            check.service_name = svc.service
            check.service_tags = list(svc.tags)
        else:
            check.service_name = ""
            check.service_tags = []
        key = (node_key, check.check_id)
        old = self.checks.get(key)
        if old is not None:
            if old == check:
                return
            check.create_index = old.create_index
        else:
            check.create_index = idx
            if check.check_id == SERF_CHECK_ID:
                self.serf_nodes.add(node_key)
        check.modify_index = idx
        self.checks[key] = check
        self.checks_by_node.setdefault(node_key, set()).add(check.check_id)
        self.bump_table("checks", idx)
        self._bump_node(check.node, idx)
        if check.service_id:
            self._bump_service(check.service_name, idx)
        else:
            self._bump_services_on_node(node_key, idx)
        if old is not None and old.service_id and old.service_id != check.service_id:
            old_svc = self.services.get((node_key, old.service_id))
            if old_svc is not None:
                self._bump_service(old_svc.service, idx)
        if check.status == "critical" and self.sessions:
            self._invalidate_check_sessions(idx, node_key, check.check_id)

    def _apply_check_status(self, idx: int, c: cmd.CheckStatus) -> bool:
        """Status/output update of an existing check (the hot path of health checking)."""
        node_key = _lower(c.node)
        old = self.checks.get((node_key, c.check_id))
        if old is None:
            raise NotFound(f"Unknown check \"{c.check_id}\"")
        updated = HealthCheck.from_dict(old.to_dict())
        updated.status = c.status
        updated.output = old.output if c.output is None else c.output
        self.ensure_check(idx, node_key, updated)
        return True

    def _apply_deregister(self, idx: int, c: cmd.Deregister) -> bool:
        node_name = c.node or ""
        if not node_name:
            raise Failed("Must provide node")
        node_key = _lower(node_name)
        if c.service_id:
            self.delete_service(idx, node_key, c.service_id)
        elif c.check_id:
            self.delete_check(idx, node_key, c.check_id)
        else:
            self.delete_node(idx, node_key)
        return True

    def delete_check(self, idx: int, node_key: str, check_id: str) -> None:
        chk = self.checks.pop((node_key, check_id), None)
        if chk is None:
            return
        ids = self.checks_by_node.get(node_key)
        if ids is not None:
            ids.discard(check_id)
            if not ids:
                del self.checks_by_node[node_key]
        self.bump_table("checks", idx)
        self._bump_node(chk.node, idx)
        if chk.service_id:
            self._bump_service(chk.service_name, idx)
        else:
            self._bump_services_on_node(node_key, idx)
        if self.sessions:
            self._invalidate_check_sessions(idx, node_key, check_id)

    def _invalidate_check_sessions(self, idx: int, node_key: str, check_id: str) -> None:
        """A session dies with any of its checks going critical or being deregistered."""
        for sess in [s for s in self.sessions.values() if _lower(s.node) == node_key and (
                check_id in s.node_checks or any(c.get("ID") == check_id for c in s.service_checks))]:
            self.invalidate_session(idx, sess.id)

    def delete_service(self, idx: int, node_key: str, service_id: str) -> None:
        svc = self.services.get((node_key, service_id))
        if svc is None:
            return
        for cid in [c for c in self.checks_by_node.get(node_key, ())
                    if self.checks[(node_key, c)].service_id == service_id]:
            self.delete_check(idx, node_key, cid)
        del self.services[(node_key, service_id)]
        ids = self.services_by_node.get(node_key)
        if ids is not None:
            ids.discard(service_id)
            if not ids:
                del self.services_by_node[node_key]
        self._unindex_service_name(svc)
        self.bump_table("services", idx)
        self._bump_service(svc.service, idx)
        self._bump_node(svc.node, idx)

    def delete_node(self, idx: int, node_key: str) -> None:
        node = self.nodes.get(node_key)
        if node is None:
            return
        for sid in list(self.services_by_node.get(node_key, ())):
            self.delete_service(idx, node_key, sid)
        for cid in list(self.checks_by_node.get(node_key, ())):
            self.delete_check(idx, node_key, cid)
        del self.nodes[node_key]
        self.bump_table("nodes", idx)
        self._bump_node(node.node, idx)
        for sess in [s for s in self.sessions.values() if _lower(s.node) == node_key]:
            self.invalidate_session(idx, sess.id)

    # ------------------------------------------------------------------ restores and sessions
    @staticmethod
    def _apply_unresolved_restore(idx: int, c: cmd.SnapshotRestoreChunks) -> None:
        # The etcd log applies a SnapshotRestore in its place when the chunks verify; reaching here
        # means they did not, at this log position, on every replica alike.
        raise Failed(f"snapshot restore failed: its state in etcd ({c.name}) is missing or corrupt")

    def invalidate_session(self, idx: int, session_id: str, now: float = 0.0) -> None:
        """Drop a session and release (or delete) the keys it holds.

        Released keys enter the session's lock-delay window, measured from ``now`` (the proposer's
        clock). A command that carries no time (a check going critical) records the window as
        pending (a negative number): it starts at the next acquire attempt, so it is never shorter.
        """
        sess = self.sessions.pop(session_id, None)
        self.session_expires.pop(session_id, None)
        if sess is None:
            return
        self.bump_table("sessions", idx)
        self.touch("session:" + session_id)
        delay = sess.lock_delay_ns / 1e9
        for key in sorted(self.session_keys.get(session_id, ())):
            if delay > 0:
                self.lock_delays[key] = now + delay if now else -delay
            if sess.behavior == "delete":
                self.kv_delete(idx, key)
            else:
                entry = self.kv[key]
                self.kv_set(idx, key, entry.value, entry.flags, session="")

    # ------------------------------------------------------------------ catalog reads
    def get_node(self, name: str) -> Node | None:
        return self.nodes.get(_lower(name))

    def list_nodes(self) -> tuple[int, list[Node]]:
        with self.lock:
            return self.tables["nodes"], sorted(self.nodes.values(), key=lambda n: n.node)

    def list_services(self) -> tuple[int, dict[str, list[str]]]:
        """Service name -> union of tags across instances (in instance order), sorted by name.

        Only a C-level copy happens under the lock; the sort happens outside it."""
        with self.lock:
            idx, tags = self.tables["services"], dict(self.service_tags)
        return idx, dict(sorted(tags.items()))

    def service_nodes(self, name: str) -> tuple[int, list[tuple[Node, Service]]]:
        with self.lock:
            idx = self.service_index.get(_lower(name), 0) or max(self.tables["services"], 1)
            rows = []
            for key in sorted(self.services_by_name.get(_lower(name), ())):
                svc = self.services[key]
                rows.append((self.nodes[key[0]], svc))
            return idx, rows

    def node_services(self, name: str) -> tuple[int, Node | None, list[Service]]:
        with self.lock:
            key = _lower(name)
            node = self.nodes.get(key)
            idx = self.node_index.get(key, 0) or max(self.tables["nodes"], self.tables["services"], 1)
            if node is None:
                return idx, None, []
            svcs = [self.services[(key, sid)] for sid in sorted(self.services_by_node.get(key, ()))]
            return idx, node, svcs

    def node_checks(self, name: str) -> tuple[int, list[HealthCheck]]:
        with self.lock:
            key = _lower(name)
            idx = self.node_index.get(key, 0) or max(self.tables["checks"], 1)
            return idx, [self.checks[(key, c)] for c in sorted(self.checks_by_node.get(key, ()))]

    def _instance_checks(self, node_key: str, service_id: str) -> list[HealthCheck]:
        out = []
        for cid in sorted(self.checks_by_node.get(node_key, ())):
            chk = self.checks[(node_key, cid)]
            if not chk.service_id or chk.service_id == service_id:
                out.append(chk)
        return out

    def service_checks(self, name: str) -> tuple[int, list[HealthCheck]]:
        with self.lock:
            idx = self.service_index.get(_lower(name), 0) or max(self.tables["checks"], 1)
            out = []
            for node_key, sid in sorted(self.services_by_name.get(_lower(name), ())):
                for cid in sorted(self.checks_by_node.get(node_key, ())):
                    chk = self.checks[(node_key, cid)]
                    if chk.service_id == sid:
                        out.append(chk)
            return idx, out

    def checks_in_state(self, state: str) -> tuple[int, list[HealthCheck]]:
        with self.lock:
            out = [c for _, c in sorted(self.checks.items())
                   if state == "any" or c.status == state]
            return max(self.tables["checks"], 1), out

    def health_service(self, name: str) -> tuple[int, list[tuple[Node, Service, list[HealthCheck]]]]:
        """Every instance of a service with its node and checks (node checks included)."""
        with self.lock:
            idx = self.service_index.get(_lower(name), 0) or max(self.catalog_index, 1)
            rows = []
            for key in sorted(self.services_by_name.get(_lower(name), ())):
                rows.append((self.nodes[key[0]], self.services[key], self._instance_checks(*key)))
            return idx, rows

    def all_check_ids(self, node: str) -> Iterable[str]:
        return self.checks_by_node.get(_lower(node), ())

    # ------------------------------------------------------------------ snapshot
    def snapshot(self, *, records: bool = False) -> dict[str, Any]:
        """The whole state as JSON-shaped data (what archives and the etcd log's snapshots hold).

        ``records=True``: nodes, services and checks are the stored record objects themselves, for
        encoding (:func:`beacon.server.durable.encode` writes them exactly as their ``to_dict``). Taking
        it is three C-level list copies under the lock (milliseconds at 172,000 instances, where the
        dicts took 1-2 s of the event loop); the rows stay as they were at this index while a worker
        thread encodes them, because the store replaces a record on every change and never mutates one
        it holds. The caller must not change them either (nor restore them into a store)."""
        def rows(table: dict[Any, Any]) -> list[Any]:
            return list(table.values()) if records else [r.to_dict() for r in table.values()]

        with self.lock, gcpause.paused():
            return {
                "version": 1,
                "index": self.index,
                "tables": dict(self.tables),
                "service_index": dict(self.service_index),
                "node_index": dict(self.node_index),
                "nodes": rows(self.nodes),
                "services": rows(self.services),
                "checks": rows(self.checks),
                "kv": [e.to_dict() for e in self.kv.values()],
                "tombstones": dict(self.tombstones),
                "tombstone_floor": self.tombstone_floor,
                "sessions": [s.to_dict() for s in self.sessions.values()],
                "lock_delays": dict(self.lock_delays),
                "session_expires": dict(self.session_expires),
                "extra": {name: dict(rows) for name, rows in self.extra.items()},
            }

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace the whole state; every watcher wakes (Consul's abandon channel)."""
        with gcpause.paused():
            self._restore(snap)
        gcpause.release_memory()  # the replaced state's heap, back to the system

    def _restore(self, snap: dict[str, Any]) -> None:
        if snap.get("version") != 1:
            raise ValueError(f"unsupported snapshot version {snap.get('version')!r}")
        fresh = StateStore()
        fresh.index = snap["index"]
        fresh.tables.update(snap["tables"])
        fresh.service_index = dict(snap["service_index"])
        fresh.node_index = dict(snap["node_index"])
        for node in _records(snap["nodes"], Node):
            fresh.nodes[_lower(node.node)] = node
        for svc in _records(snap["services"], Service):
            key = (_lower(svc.node), svc.id)
            fresh.services[key] = svc
            fresh.services_by_node.setdefault(key[0], set()).add(svc.id)
            fresh.services_by_name.setdefault(_lower(svc.service), set()).add(key)
        for chk in _records(snap["checks"], HealthCheck):
            fresh.checks[(_lower(chk.node), chk.check_id)] = chk
            fresh.checks_by_node.setdefault(_lower(chk.node), set()).add(chk.check_id)
            if chk.check_id == SERF_CHECK_ID:
                fresh.serf_nodes.add(_lower(chk.node))
        for e in snap["kv"]:
            entry = KVEntry.from_dict(e)
            fresh.kv[entry.key] = entry
        fresh.kv_keys = sorted(fresh.kv)
        for entry in fresh.kv.values():
            if entry.session:
                fresh.session_keys.setdefault(entry.session, set()).add(entry.key)
        fresh.tombstones = dict(snap["tombstones"])
        fresh.tombstone_floor = int(snap.get("tombstone_floor", 0))
        for s in snap["sessions"]:
            sess = Session.from_dict(s)
            fresh.sessions[sess.id] = sess
        fresh.lock_delays = dict(snap.get("lock_delays", {}))
        fresh.session_expires = dict(snap.get("session_expires", {}))
        for name_key in fresh.services_by_name:
            fresh.refresh_service_tags(name_key)
        fresh.extra = {name: dict(rows) for name, rows in snap.get("extra", {}).items()}
        with self.lock:
            self.generation += 1
            self.catalog_version += 1
            for attr in ("index", "tables", "nodes", "services", "services_by_node", "services_by_name",
                         "checks", "checks_by_node", "serf_nodes", "service_index", "node_index", "kv", "kv_keys",
                         "tombstones", "tombstone_floor", "sessions", "lock_delays", "session_expires", "session_keys",
                         "service_tags", "_service_displays", "extra"):
                setattr(self, attr, getattr(fresh, attr))
        if self.on_change is not None:
            self.on_change(self.index, {"*"})
