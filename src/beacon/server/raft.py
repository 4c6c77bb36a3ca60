"""Raft replication of the state machine with PySyncObj.

`RaftConsensus` implements the :class:`~beacon.server.consensus.Consensus` protocol for 3 or 5 servers.
PySyncObj runs its own thread; the state machine is applied there (under the store's lock), watch
notifications and command results cross to the event loop with ``call_soon_threadsafe``.

What this adapter adds to PySyncObj 0.3.17 (see ../shared/reference/pysyncobj-facts.md):

* **Durability.** PySyncObj's journal is an mmap that is never synced while running. Here every server
  syncs (msync + fsync) its journal before it sends AppendEntries (leader) and before it acknowledges
  them (follower), so no entry counts toward a commit before it is on disk on a majority. Commands
  proposed in one tick share one sync and one AppendEntries (group commit).
* **Snapshots** are written by our own serializer (checksummed, fsync'd, renamed, directory fsync'd);
  PySyncObj's own dump is renamed without fsync and could leave a truncated journal with no snapshot
  after a power loss.
* **Security.** PySyncObj unpickles what it receives. With a cluster key (`-encrypt`) its traffic is
  encrypted and authenticated (`password`); without one, servers refuse to bind anything but loopback.
* **Latency.** `appendEntriesUseBatch=False` (0.25 ms commits instead of 100 ms ticks) and timeouts
  tuned for sub-1.5 s failover.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.node import TCPNode

from beacon.server.consensus import NoLeaderError
from beacon.server.durable import DataDirError, atomic_write, decode, encode
from beacon.server.fsm import ApplyResult, Command, MessageType, StateStore

log = logging.getLogger("beacon.raft")

# Errors after which the command was never appended: safe to retry on the next leader.
_RETRYABLE = {FAIL_REASON.MISSING_LEADER, FAIL_REASON.QUEUE_FULL, FAIL_REASON.NOT_LEADER}


class IndeterminateError(Exception):
    """Leadership changed while a command was in flight: it may or may not have been committed."""


class _StoreConsumer(SyncObjConsumer):
    def __init__(self, store: StateStore) -> None:
        super().__init__()
        self.store = store

    @replicated
    def apply(self, command: Command) -> ApplyResult:
        return self.store.apply(command)


class _BeaconSyncObj(SyncObj):
    """SyncObj with a synced journal and one sync + AppendEntries per batch of proposals."""

    def __init__(self, self_addr: str, partners: list[str], conf: SyncObjConf, consumer: _StoreConsumer) -> None:
        self.sync_count = 0
        self._journal_dirty = True
        super().__init__(self_addr, partners, conf, consumers=[consumer])
        journal = self._SyncObj__raftLog  # type: ignore[attr-defined]
        for name in ("add", "clear", "deleteEntriesFrom", "deleteEntriesTo"):
            setattr(journal, name, self._dirtying(getattr(journal, name)))
        original_send_ae = self._SyncObj__sendAppendEntries  # type: ignore[attr-defined]
        original_send_next = self._SyncObj__sendNextNodeIdx  # type: ignore[attr-defined]

        def send_append_entries() -> None:
            self.sync_journal()
            original_send_ae()

        def send_next_node_idx(*args: Any, **kwargs: Any) -> None:
            self.sync_journal()
            original_send_next(*args, **kwargs)

        # Name-mangled private methods are looked up on the instance first: wrap them there.
        self._SyncObj__sendAppendEntries = send_append_entries
        self._SyncObj__sendNextNodeIdx = send_next_node_idx

    def _dirtying(self, method: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self._journal_dirty = True
            return method(*args, **kwargs)
        return wrapper

    def sync_journal(self) -> None:
        journal = self._SyncObj__raftLog  # type: ignore[attr-defined]
        rfile = getattr(journal, "_FileJournal__journalFile", None)
        if rfile is None:
            return
        if not self._journal_dirty:  # heartbeats and acks that wrote nothing
            return
        self._journal_dirty = False
        mm = rfile._ResizableFile__mm
        fh = rfile._ResizableFile__f
        mm.flush()
        os.fsync(fh.fileno())
        self.sync_count += 1

    def _checkCommandsToApply(self) -> None:
        conf = self._SyncObj__conf  # type: ignore[attr-defined]
        before = self._SyncObj__getCurrentLogIndex()  # type: ignore[attr-defined]
        batch_mode = conf.appendEntriesUseBatch
        conf.appendEntriesUseBatch = True  # collect this tick's proposals without sending each one
        try:
            super()._checkCommandsToApply()
        finally:
            conf.appendEntriesUseBatch = batch_mode
        if not batch_mode and self._isLeader() and self._SyncObj__getCurrentLogIndex() != before:  # type: ignore[attr-defined]
            self._SyncObj__sendAppendEntries()  # type: ignore[attr-defined]


def _snapshot_serializer(store: StateStore) -> tuple[Any, Any]:
    def serializer(path: str, data: tuple[Any, ...]) -> None:
        entry1, entry0, cluster = data
        body = encode({"state": store.snapshot(), "entry1": list(entry1), "entry0": list(entry0),
                       "cluster": sorted(n.id if hasattr(n, "id") else str(n) for n in cluster)})
        atomic_write(path, b"sha256:" + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)

    def deserializer(path: str) -> tuple[Any, ...]:
        with open(path, "rb") as f:
            raw = f.read()
        head, _, body = raw.partition(b"\n")
        if not head.startswith(b"sha256:") or hashlib.sha256(body).hexdigest().encode() != head[7:]:
            raise DataDirError(f"raft snapshot {path} is corrupt (checksum mismatch or truncated)")
        doc = decode(body)
        store.restore(doc["state"])
        return tuple(doc["entry1"]), tuple(doc["entry0"]), list(doc["cluster"])

    return serializer, deserializer


def check_data_dir(raft_dir: str) -> None:
    """Fail with a clear message on a damaged journal or snapshot instead of a traceback later."""
    journal = os.path.join(raft_dir, "journal")
    if os.path.exists(journal):
        size = os.path.getsize(journal)
        if 0 < size < 40:
            raise DataDirError(f"raft journal {journal} is truncated ({size} bytes, the header alone is 40)")
        if size:
            with open(journal, "rb") as f:
                header = f.read(40)
            if not header.startswith(b"PYSYNCOBJ"):
                raise DataDirError(f"raft journal {journal} is corrupt (bad header)")
    snap = os.path.join(raft_dir, "snapshot")
    if os.path.exists(snap):
        _, deserializer = _snapshot_serializer(StateStore())
        try:
            deserializer(snap)
        except DataDirError:
            raise
        except Exception as exc:
            raise DataDirError(f"raft snapshot {snap} cannot be read: {exc}") from exc


class RaftConsensus:
    """Consensus over PySyncObj for a multi-server cluster."""

    def __init__(self, store: StateStore, self_addr: str, partners: list[str], data_dir: str,
                 node_id: str, node_name: str, password: str | None = None, hold_timeout: float = 7.0) -> None:
        self.store = store
        self.self_addr = self_addr
        self.node_id = node_id
        self.node_name = node_name
        self.hold_timeout = hold_timeout
        self.raft_dir = os.path.join(data_dir, "raft")
        os.makedirs(self.raft_dir, mode=0o700, exist_ok=True)
        check_data_dir(self.raft_dir)
        self._partners = [p for p in partners if p != self_addr]
        self._password = password
        self._obj: _BeaconSyncObj | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_contact = time.monotonic()
        self._watcher: asyncio.Task[None] | None = None
        self._lock = threading.Lock()
        self.leader_changes = 0
        self.names: dict[str, str] = {}  # raft address -> node name (from membership)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        serializer, deserializer = _snapshot_serializer(self.store)
        conf = SyncObjConf(
            appendEntriesUseBatch=False,
            appendEntriesPeriod=0.05,
            raftMinTimeout=0.3,
            raftMaxTimeout=0.75,
            leaderFallbackTimeout=1.5,
            connectionTimeout=1.0,
            connectionRetryTime=0.5,
            dynamicMembershipChange=True,
            journalFile=os.path.join(self.raft_dir, "journal"),
            fullDumpFile=os.path.join(self.raft_dir, "snapshot"),
            serializer=serializer,
            deserializer=deserializer,
            logCompactionMinEntries=20000,
            logCompactionMinTime=600,
            password=self._password,
            onStateChanged=self._on_state_changed,
            commandsWaitLeader=True,
            bindAddress=self.self_addr,
        )
        self._consumer = _StoreConsumer(self.store)
        await self._loop.run_in_executor(
            None, lambda: setattr(self, "_obj", _BeaconSyncObj(self.self_addr, self._partners, conf, self._consumer)))
        self._watcher = self._loop.create_task(self._watch_leader(), name="raft-leader-watch")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        obj, self._obj = self._obj, None
        if obj is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, obj.destroy_synchronous)

    def _on_state_changed(self, old: int, new: int) -> None:
        self.leader_changes += 1
        from beacon import telemetry

        telemetry.leader_changed(self.leader_raft_address())

    # ------------------------------------------------------------------ writes
    async def submit(self, command: Command) -> ApplyResult:
        obj = self._obj
        if obj is None:
            raise NoLeaderError("server is not running")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.hold_timeout
        while True:
            fut: asyncio.Future[tuple[Any, int]] = loop.create_future()

            def callback(result: Any, error: int, fut: asyncio.Future[tuple[Any, int]] = fut) -> None:
                loop.call_soon_threadsafe(_resolve, fut, (result, error))

            self._consumer.apply(command, callback=callback)
            try:
                result, error = await asyncio.wait_for(fut, max(0.1, deadline - loop.time()))
            except TimeoutError:
                raise NoLeaderError("timed out waiting for the cluster to commit the write") from None
            if error == FAIL_REASON.SUCCESS:
                return result
            if error in _RETRYABLE and loop.time() < deadline:
                await asyncio.sleep(0.05)
                continue
            if error in _RETRYABLE:
                raise NoLeaderError()
            raise IndeterminateError(
                f"leadership changed while the write was in flight ({FAIL_REASON_NAMES.get(error, error)}); "
                "it may or may not have been applied")

    async def barrier(self) -> None:
        """A no-op through the log: once it applies here, every write acknowledged before is visible."""
        result = await self.submit((MessageType.NOOP, {}))
        if result.error is not None:
            raise NoLeaderError(result.error.message)

    # ------------------------------------------------------------------ cluster state
    def _status(self) -> dict[str, Any]:
        obj = self._obj
        return obj.getStatus() if obj is not None else {}

    def is_leader(self) -> bool:
        obj = self._obj
        return bool(obj is not None and obj._isLeader())

    def leader_raft_address(self) -> str:
        """The leader this server is in contact with, or "". PySyncObj keeps its last known leader
        while it is connected to nobody (it starts no election then), so check the connection."""
        obj = self._obj
        if obj is None:
            return ""
        leader = obj._getLeader()
        if leader is None:
            return ""
        if leader.id != self.self_addr and not obj.isNodeConnected(leader):
            return ""
        if leader.id == self.self_addr and not obj._isLeader():
            return ""
        return leader.id

    def known_leader(self) -> bool:
        known = bool(self.leader_raft_address())
        if known:
            self._last_contact = time.monotonic()
        return known

    def leader_address(self) -> str:
        return self.leader_raft_address()

    def last_contact_ms(self) -> int:
        """0 on the leader and while a leader is in contact; otherwise the time since one last was
        (at least 1 ms, so a client can tell a stale answer from a fresh one)."""
        if self.is_leader() or self.known_leader():
            return 0
        return max(1, int((time.monotonic() - self._last_contact) * 1000))

    async def _watch_leader(self) -> None:
        while True:
            self.known_leader()  # keeps _last_contact fresh while nobody asks
            await asyncio.sleep(0.1)

    def peers(self) -> list[str]:
        obj = self._obj
        if obj is None:
            return []
        nodes = {self.self_addr} | {n.id for n in obj.otherNodes}
        return sorted(nodes)

    def configuration(self) -> list[dict[str, Any]]:
        leader = self.leader_raft_address()
        return [{"ID": addr, "Node": self.names.get(addr, "(unknown)"), "Address": addr,
                 "Leader": addr == leader, "Voter": True, "ProtocolVersion": "3"} for addr in self.peers()]

    def commit_index(self) -> int:
        return int(self._status().get("commit_idx", 0))

    async def add_server(self, raft_addr: str) -> None:
        await self._membership("addNodeToCluster", raft_addr)

    async def remove_server(self, raft_addr: str) -> None:
        await self._membership("removeNodeFromCluster", raft_addr)

    async def _membership(self, method: str, raft_addr: str) -> None:
        obj = self._obj
        if obj is None:
            raise NoLeaderError()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[Any, int]] = loop.create_future()
        getattr(obj, method)(TCPNode(raft_addr),
                             callback=lambda r, e: loop.call_soon_threadsafe(_resolve, fut, (r, e)))
        _, error = await asyncio.wait_for(fut, 10)
        if error != FAIL_REASON.SUCCESS:
            raise RuntimeError(f"{method}({raft_addr}) failed: {FAIL_REASON_NAMES.get(error, error)}")


FAIL_REASON_NAMES = {getattr(FAIL_REASON, n): n for n in dir(FAIL_REASON) if n.isupper()}


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)
