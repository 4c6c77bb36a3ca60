"""The replicated command log on etcd: Beacon's :class:`~beacon.server.consensus.Consensus` for clusters.

Layout under ``/beacon/<dc>/``:

* ``log``: every write is part of a put of this key; its value is an *envelope*
  ``{"t": proposer time, "b": [{"i": command id, "x": expiry, "c": [type, payload]}, ...]}`` holding
  the commands that queued on one server while its previous puts were in flight (group commit).
  etcd's Raft orders, replicates and persists the puts; the key's revisions are the log. Every
  server watches the key from the revision after the last one it applied and applies the commands in
  order; a command's index (``X-Consul-Index``, ``ModifyIndex``) is ``revision * 1000 + position``,
  derived from etcd's revision, so monotonic across leader changes and restarts and unique per
  command.
* ``snap/meta`` and ``snap/<rev>/<n>``: the newest snapshot of the state machine at log revision
  ``rev``, zlib'd and cut into 1 MiB chunks (etcd refuses requests above 1.5 MiB). The leader writes
  one every ``snapshot_threshold`` revisions, then compacts etcd at ``rev``. A server that starts, or
  whose watch start revision was compacted away, loads the snapshot and replays after it.
* ``restore/<name>/<n>``: the state of a snapshot restore (``PUT /v1/snapshot``), written before
  the small log command that names it; every server reads it at that command's revision
  (:mod:`beacon.server.etcd_restore`).
* ``leader``: the leader election. A server that finds the key absent creates it in a txn
  (``create_revision == 0``) attached to a lease of ``lease_ttl`` seconds and keeps the lease alive;
  it is the leader (session expiry, reaping, membership reconciliation, snapshots, clock ticks) while
  its last renewal is younger than the TTL minus a margin. ``/v1/status/leader`` reports it
  (:mod:`beacon.server.etcd_leader`, with transfer-leader and etcd membership).

**A write answered with an error is never applied later.** A put whose answer was lost (timeout,
connection reset, etcd "request timed out") may still commit, later, e.g. when a partition heals.
Every command carries an expiry ``x`` (proposer time + hold timeout - 2 s); replicas keep a *log
clock*, the largest proposer time among entries applied so far, and skip (as an error result) a
command whose expiry is below the log clock when it comes up. The log clock is part of the log, so
every replica decides the same. The leader appends a clock tick when the log has been idle for 1 s,
and a server whose put went unanswered appends its own tick and waits for it: once a tick newer than
the expiry is applied, the command either applied before it (the caller gets its result) or never
will (the caller gets an error). Without any reachable majority the caller gets an error at the hold
timeout, and the command can only apply within about a second of log-clock lag after that.

Reads: ``?stale`` reads local state. Default and ``?consistent`` reads first learn the log's current
revision with a linearizable range read of the ``log`` key (no log write; concurrent reads share one
range request that started after they arrived) and wait until this server has applied it.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
import uuid
from typing import Any

from beacon.server import commands as cmd
from beacon.server import etcd_restore, etcd_snapshot
from beacon.server.consensus import NoLeaderError
from beacon.server.durable import encode
from beacon.server.etcd_client import (
    KV,
    EtcdClient,
    EtcdCompacted,
    EtcdError,
    EtcdNotConnected,
    EtcdUnavailable,
)
from beacon.server.etcd_envelope import decode_envelope
from beacon.server.etcd_leader import LeaderAndMembers
from beacon.server.fsm import ApplyResult, Command, StateStore

log = logging.getLogger("beacon.etcd")

TICK_IDLE = 1.0
ATTEMPT = 1.0       # seconds per put attempt before retrying the same envelope
MAX_OPS = 64        # operations per put, a txn counting its ops: bounds one entry's apply (the loop's
                    # stall) and keeps the envelope far below etcd's 1.5 MiB request limit
MAX_INFLIGHT = 4    # batch puts in flight per server
INDEX_STRIDE = 1000  # Consul index = etcd revision * 1000 + position in the batch
EXPIRY_MARGIN = 2.0
APPLY_GRACE = 5.0   # seconds past the hold timeout a committed write waits for this server's apply


class EtcdConsensus(LeaderAndMembers):
    """Consensus over an etcd cluster (a member this agent supervises, or ``-etcd-endpoints``)."""

    def __init__(self, store: StateStore, client: EtcdClient, datacenter: str, node_name: str,
                 self_addr: str, hold_timeout: float = 7.0, lease_ttl: int = 2,
                 snapshot_threshold: int = 16384, peer_scheme: str = "http") -> None:
        self.store = store
        self.client = client
        self.prefix = f"/beacon/{datacenter}/".encode()
        self.log_key = self.prefix + b"log"
        self.leader_key = self.prefix + b"leader"
        self.node_name = node_name
        self.self_addr = self_addr
        self.hold_timeout = hold_timeout
        self.lease_ttl = lease_ttl
        self.snapshot_threshold = snapshot_threshold
        self.peer_scheme = peer_scheme
        self.applied = 0           # last log revision applied here
        self.log_clock = 0.0       # largest proposer time among applied entries
        self.snapshot_rev = 0      # revision of the newest snapshot we know of
        self.recent: dict[str, float] = {}  # ids of applied commands that could still reappear -> expiry
        self.restores: dict[str, int] = {}  # chunk sets of restores applied here -> their revision
        self._recent_limit = 4096
        self._early: dict[int, KV] = {}  # previous log revision -> our own entry that follows it
        self._queue: list[dict[str, Any]] = []  # commands waiting for the next batch put
        self._flush_wake = asyncio.Event()
        self._senders: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_INFLIGHT)  # batch puts in flight (a caller's own put counts)
        self._lone = True  # the last batch held one write: writes come one at a time
        self.leader: dict[str, str] | None = None
        self.leader_changes = 0
        self.names: dict[str, str] = {}
        self.members: list[dict[str, Any]] = []
        self.last_snapshot: dict[str, float] = {}
        self._pending: dict[str, asyncio.Future[ApplyResult | None]] = {}
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_seq = 0
        self._lease = 0
        self._leader_until = 0.0
        self._leader_since = 0.0
        self._absent_since = 0.0
        self._handed_off_until = 0.0  # this server gave leadership away: it does not take it back soon
        self._chosen = False  # this server's leadership came from a transfer-leader naming it
        self._took_late = False  # this server took the leader key only after a second without a leader
        self._last_ok = 0.0
        self._last_members = 0.0
        self._ri_next: asyncio.Future[int] | None = None
        self._ri_running = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._snapshotting = False
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._apply_loop(), name="etcd-apply"),
                       loop.create_task(self._leader_loop(), name="etcd-leader"),
                       loop.create_task(self._flush_loop(), name="etcd-flush")]

    async def stop(self) -> None:
        self._closed = True
        if self._lease and self.is_leader():
            try:  # hand leadership over at once instead of after the lease TTL
                await asyncio.wait_for(self.client.lease_revoke(self._lease), 2)
            except (TimeoutError, EtcdUnavailable, EtcdError):
                pass
        for t in [*self._tasks, *self._senders]:
            t.cancel()
        for t in [*self._tasks, *self._senders]:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        await self.client.close()

    # ------------------------------------------------------------------ writes
    async def submit(self, command: Command) -> ApplyResult:
        """Queue the command for the next batch put; return its result once applied here."""
        if self._closed:
            raise NoLeaderError("server is shutting down")
        if int(command[0]) == cmd.MessageType.SNAPSHOT_RESTORE:
            # The whole state: far over etcd's request limit, so it goes in chunk keys first and
            # the log gets a reference (beacon.server.etcd_restore).
            try:
                ref = await etcd_restore.stage(self.client, self.prefix, command[1]["snapshot"],
                                               float(command[1].get("now", 0.0)))
            except (EtcdUnavailable, EtcdError) as exc:
                raise NoLeaderError(f"storing the snapshot in etcd failed: {exc}") from None
            command = cmd.encode(ref)
        cid = uuid.uuid4().hex
        entry = {"i": cid, "x": time.time() + max(1.0, self.hold_timeout - EXPIRY_MARGIN),
                 "c": [int(command[0]), command[1]]}
        fut: asyncio.Future[ApplyResult | None] = asyncio.get_running_loop().create_future()
        self._pending[cid] = fut
        try:
            if self._lone and len(self._pending) == 1 and not self._senders:  # (a caller's own put has its pending entry)
                # The only write on this server, nothing in flight, and the flush loop's last
                # batch was a single write too (sequential writes): its caller sends its own put,
                # with no hop through the flush loop and no task of its own; the answer usually
                # applies it at once. Under load everything goes through the flush loop: sending
                # the first write after each lull alone cost an extra one-write put per round of
                # batches (batches of 5.4-5.6 instead of 6.5-7.5 at 64 clients, more CPU per write).
                await self._slots.acquire()  # free: returns at once
                try:
                    await self._send([entry])
                finally:
                    self._slots.release()
                if fut.done():
                    return self._result(fut.result())
            else:
                self._queue.append(entry)
                self._flush_wake.set()
            # The batch sender answers within the hold timeout; past it, the command was committed
            # and only this server's apply is late: its etcd member went down right after the
            # commit (a full disk crashes it on its backend commit, and it crash-loops until space
            # returns). The caller learns that within APPLY_GRACE rather than after half a minute.
            result = await asyncio.wait_for(asyncio.shield(fut), self.hold_timeout + APPLY_GRACE)
            return self._result(result)
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: the caller went away (its own put was cancelled)
            raise
        except TimeoutError:
            raise NoLeaderError("the write was committed but this server has not applied it yet") from None
        finally:
            self._pending.pop(cid, None)

    async def _flush_loop(self) -> None:
        """Group commit: whatever queued while earlier puts were in flight goes out as one put (up to
        MAX_OPS operations, see _batch_len), with at most MAX_INFLIGHT puts in flight (a caller's own
        put counts)."""
        slots = self._slots
        while True:
            await self._flush_wake.wait()
            self._flush_wake.clear()
            while self._queue:
                await slots.acquire()
                n = _batch_len(self._queue)
                batch, self._queue = self._queue[:n], self._queue[n:]
                self._lone = len(batch) == 1
                task = asyncio.get_running_loop().create_task(self._send(batch))
                self._senders.add(task)
                task.add_done_callback(self._senders.discard)
                task.add_done_callback(lambda _t: slots.release())

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        expiry = min(e["x"] for e in batch)
        deadline = expiry + EXPIRY_MARGIN  # wall clock: the hold timeout of the oldest command
        data = encode({"t": time.time(), "b": batch})
        uncertain = False
        try:
            while True:
                # Short attempts, retried with the same envelope: a copy that commits twice applies
                # once (apply skips command ids it has seen), so a lost answer costs one attempt.
                attempt = min(ATTEMPT, deadline - time.time())
                if attempt < 0.05 or time.time() > expiry or self._all_done(batch):
                    break
                try:
                    rev, prev = await self.client.put_prev(self.log_key, data, timeout=attempt)
                except EtcdNotConnected:  # never reached etcd, or its member has no leader: not proposed
                    await asyncio.sleep(0.05)
                    continue
                except EtcdError as exc:  # refused: this copy was not proposed
                    if not uncertain:
                        self._fail(batch, NoLeaderError(f"write refused: {exc}"))
                        return
                    break
                except EtcdUnavailable:
                    uncertain = True
                    await asyncio.sleep(0.05)
                    continue
                self._last_ok = time.monotonic()
                # The batch directly follows `prev` in the log: once `prev` is applied here, apply it
                # from this answer instead of waiting for the watch to bring it back.
                self._early[prev] = KV(self.log_key, data, rev, 0, 0)
                self._drain_early()
                return  # committed: the apply resolves every command (the log decides expiry)
            await self._settle(batch, expiry, deadline)
        except asyncio.CancelledError:
            self._fail(batch, NoLeaderError("server is shutting down"))
            raise

    def _all_done(self, batch: list[dict[str, Any]]) -> bool:
        return all(f is None or f.done() for f in (self._pending.get(e["i"]) for e in batch))

    def _fail(self, batch: list[dict[str, Any]], exc: Exception) -> None:
        for e in batch:
            fut = self._pending.get(e["i"])
            if fut is not None and not fut.done():
                fut.set_exception(exc)

    async def _settle(self, batch: list[dict[str, Any]], expiry: float, deadline: float) -> None:
        """The outcome is unknown: let the log decide, with a clock tick past the expiry. Once that
        tick is applied here, every command of the batch has applied before it or never will."""
        while time.time() < deadline and not self._all_done(batch):
            if time.time() <= expiry:
                await asyncio.sleep(min(0.1, expiry - time.time() + 0.01))
                continue
            try:
                tick = await self._tick(timeout=max(0.2, min(1.0, deadline - time.time())))
                await self.wait_applied(tick, max(0.5, deadline - time.time()))
            except (EtcdUnavailable, EtcdError, NoLeaderError):
                await asyncio.sleep(0.2)
                continue
            self._fail(batch, NoLeaderError("No cluster leader: the write was not committed in time and "
                                            "will not be applied"))
            return
        self._fail(batch, NoLeaderError("No cluster leader: the write was not committed within the hold "
                                        "timeout; it will not be applied"))

    @staticmethod
    def _result(result: ApplyResult | None) -> ApplyResult:
        if result is None:
            raise NoLeaderError("No cluster leader: the write expired before it was committed and was not applied")
        return result

    async def _tick(self, timeout: float) -> int:
        return await self.client.put(self.log_key, encode({"t": time.time()}), timeout=timeout)

    # ------------------------------------------------------------------ apply
    async def _apply_loop(self) -> None:
        first = True
        while True:
            try:
                if first:
                    await self._load_snapshot()
                    first = False
                async for _, events in self.client.watch(self.log_key, self.applied + 1):
                    for ev in events:
                        if ev["type"] == "PUT":
                            await self._apply_watched(ev["kv"])
                            self._drain_early()
                            # One entry at a time: lookups queued behind a watch response of many
                            # entries are answered between them, not after the whole burst.
                            await asyncio.sleep(0)
            except asyncio.CancelledError:
                raise
            except EtcdCompacted as exc:
                log.info("log compacted at %d while this server was at %d: loading the snapshot",
                         exc.compact_revision, self.applied)
                try:
                    await self._load_snapshot()
                except (EtcdUnavailable, EtcdError) as exc2:
                    log.warning("loading the snapshot failed: %s", exc2)
                    await asyncio.sleep(0.5)
            except (EtcdUnavailable, EtcdError) as exc:
                log.debug("log watch: %s", exc)
                await asyncio.sleep(0.2)
            except Exception:
                log.exception("applying the log failed")
                await asyncio.sleep(1.0)

    async def _apply_watched(self, kv: KV) -> None:
        if kv.mod_revision <= self.applied:
            return
        env = self._decode(kv)
        # A chunked restore reads its state from etcd first; nothing applies until it is read whole
        # (an etcd error retries the watch from here, a compacted revision loads the snapshot).
        resolved = await etcd_restore.resolve(self.client, self.prefix, env, kv.mod_revision)
        if kv.mod_revision > self.applied:  # an early entry may have applied it meanwhile
            self._apply_env(kv.mod_revision, env, resolved)

    def _drain_early(self) -> None:
        while self.applied in self._early:
            kv = self._early[self.applied]
            env = self._decode(kv)
            if etcd_restore.references(env):
                break  # its chunks are read by the watch loop, which applies it and what follows
            del self._early[self.applied]
            self._apply_env(kv.mod_revision, env, {})
        if len(self._early) > 1024:  # entries the watch applied first
            self._early = {p: kv for p, kv in self._early.items() if p >= self.applied}

    @staticmethod
    def _decode(kv: KV) -> dict[str, Any]:
        try:
            env = decode_envelope(kv.value)
        except ValueError:
            env = None
        if not isinstance(env, dict):
            log.error("skipping undecodable log entry at revision %d", kv.mod_revision)
            return {}
        return env

    def _apply_env(self, rev: int, env: dict[str, Any], resolved: dict[int, cmd.Record]) -> None:
        if rev <= self.applied:
            return
        clock = self.log_clock  # the log's time before this entry: decides every expiry in it
        for pos, e in enumerate(env.get("b", ())):
            cid = str(e.get("i", ""))
            result: ApplyResult | None = None
            if float(e.get("x", float("inf"))) < clock:
                result = None  # expired before it was committed: its proposer answered an error
            elif cid in self.recent:
                continue  # a retried copy of a command that already applied
            else:
                c = e["c"]
                command = resolved.get(pos) or (int(c[0]), c[1])
                result = self.store.apply(command, index=rev * INDEX_STRIDE + pos)
                self.recent[cid] = float(e["x"])
                if pos in resolved:
                    self.restores[str(c[1].get("name", ""))] = rev
            fut = self._pending.get(cid)
            if fut is not None and not fut.done():
                fut.set_result(result)
        self.log_clock = max(self.log_clock, float(env.get("t", 0.0)))
        self.applied = rev
        if len(self.recent) > self._recent_limit:
            # An id whose expiry is behind the log clock cannot apply again anyway: forget it.
            self.recent = {k: x for k, x in self.recent.items() if x >= self.log_clock}
            self._recent_limit = max(4096, 2 * len(self.recent))
        while self._waiters and self._waiters[0][0] <= rev:
            _, _, w = heapq.heappop(self._waiters)
            if not w.done():
                w.set_result(None)

    async def wait_applied(self, rev: int, timeout: float) -> None:
        if self.applied >= rev:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter_seq += 1
        heapq.heappush(self._waiters, (rev, self._waiter_seq, fut))
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise NoLeaderError(f"this server has not caught up with the log (at {self.applied}, "
                                f"need {rev})") from None

    # ------------------------------------------------------------------ reads
    async def read_barrier(self, timeout: float | None = None) -> None:
        """Wait until every write acknowledged before this call is applied here (no log write)."""
        timeout = self.hold_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                target = await self._read_index(max(0.05, deadline - loop.time()))
                break
            except NoLeaderError:
                if loop.time() + 0.1 >= deadline:  # etcd has no quorum (yet): retry while we may
                    raise
                await asyncio.sleep(0.1)
        await self.wait_applied(target, max(0.1, deadline - loop.time()))
        while not self.known_leader() and loop.time() < deadline:  # just started: first election round
            await asyncio.sleep(0.05)

    async def _read_index(self, timeout: float) -> int:
        """The log's current revision, from a linearizable range read that started after this call."""
        loop = asyncio.get_running_loop()
        if self._ri_next is None:
            self._ri_next = loop.create_future()
            if not self._ri_running:
                self._ri_running = True
                task = loop.create_task(self._read_index_worker())
                self._tasks.append(task)
                task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)
        try:
            return await asyncio.wait_for(asyncio.shield(self._ri_next), timeout)
        except TimeoutError:
            raise NoLeaderError() from None

    barrier = read_barrier

    async def _read_index_worker(self) -> None:
        try:
            while self._ri_next is not None:
                fut, self._ri_next = self._ri_next, None
                try:
                    _, kvs = await self.client.range(self.log_key, keys_only=True, timeout=ATTEMPT * 2)
                    self._last_ok = time.monotonic()
                    fut.set_result(kvs[0].mod_revision if kvs else 0)
                except (EtcdUnavailable, EtcdError) as exc:
                    fut.set_exception(NoLeaderError(f"No cluster leader ({exc})"))
                    fut.exception()  # retrieved: every waiter may have timed out already
        finally:
            self._ri_running = False

    # ------------------------------------------------------------------ snapshots
    async def _load_snapshot(self) -> bool:
        """Load the newest snapshot if it is ahead of local state; True if one was loaded."""
        got = await etcd_snapshot.read(self.client, self.prefix, newer_than=self.applied)
        if got is None:
            return False
        rev, doc, size = got
        self.snapshot_rev = max(self.snapshot_rev, rev)
        self.store.restore(doc["state"])
        self.log_clock = float(doc["log_clock"])
        self.recent = dict(doc.get("recent", {}))
        self.applied = rev
        log.info("loaded the snapshot at revision %d (%d bytes)", rev, size)
        return True

    async def _maybe_snapshot(self) -> None:
        if self._snapshotting or self.applied - self.snapshot_rev < self.snapshot_threshold:
            return
        self._snapshotting = True
        try:
            t0 = time.monotonic()
            # Another leader may have written one since we last looked: its chunks are the ones to drop.
            self.snapshot_rev = max(self.snapshot_rev, await etcd_snapshot.newest_revision(self.client, self.prefix))
            if self.applied - self.snapshot_rev < self.snapshot_threshold:
                return
            rev, clock = self.applied, self.log_clock
            doc = {"state": self.store.snapshot(records=True), "log_clock": clock, "rev": rev,
                   "recent": {k: x for k, x in self.recent.items() if x >= clock}}
            size, n = await etcd_snapshot.write(self.client, self.prefix, rev, doc, previous=self.snapshot_rev)
            self.snapshot_rev = rev
            await self.client.compact(rev)
            for name in await etcd_restore.collect(self.client, self.prefix, rev, self.restores):
                self.restores.pop(name, None)
            seconds = time.monotonic() - t0
            self.last_snapshot = {"revision": rev, "bytes": size, "seconds": seconds}
            from beacon import telemetry

            telemetry.snapshot_taken(size, seconds)
            log.info("snapshot at revision %d: %d bytes in %d chunks, %.0f ms; etcd compacted",
                     rev, size, n, seconds * 1000)
        except (EtcdUnavailable, EtcdError) as exc:
            log.warning("snapshot failed: %s", exc)
        finally:
            self._snapshotting = False

    async def _leader_duties(self) -> None:
        if time.time() - self.log_clock > TICK_IDLE:
            await self._tick(timeout=1.0)
        if not self._snapshotting and self.applied - self.snapshot_rev >= self.snapshot_threshold:
            task = asyncio.get_running_loop().create_task(self._maybe_snapshot(), name="etcd-snapshot")
            self._tasks.append(task)
            task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    # ------------------------------------------------------------------ cluster state
    @property
    def ready(self) -> bool:
        """etcd has answered a linearizable request: the cluster has a quorum (a leader)."""
        return self._last_ok > 0

    def commit_index(self) -> int:
        return self.applied


def _batch_len(queue: list[dict[str, Any]]) -> int:
    """How many queued commands the next put takes: up to MAX_OPS operations, a txn counting its
    ops and any other command one (at least one command). A replica applies an entry in one go, so
    the operations per entry bound how long its loop is away from lookups (a 64-op health txn
    applies in ~0.8 ms in an idle process; a burst of them could otherwise share one envelope and
    one multi-millisecond callback)."""
    ops = 0
    for n, e in enumerate(queue[:MAX_OPS]):
        c = e["c"]
        ops += len(c[1].get("ops", ())) if c[0] == cmd.MessageType.TXN else 1
        if ops > MAX_OPS and n:
            return n
    return min(len(queue), MAX_OPS)
