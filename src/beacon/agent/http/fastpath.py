"""The hot reads answered from their cached view bytes before aiohttp builds a request at all.

Which requests: ``GET /v1/kv/<key>``, ``GET /v1/health/service/<name>`` and
``GET /v1/catalog/services``, with no query parameters but ``index``, ``wait``, ``stale``,
``consistent``, ``pretty`` (and ``passing`` on health), no body, no ``Expect``, no namespace header,
HTTP/1.1 keep-alive, on a server (``-dev``, a lone bootstrapped server, or a server of a cluster,
whose default and ``?consistent`` reads first wait for the log's linearizable read, once per burst of
requests; client agents relay reads to servers and are not served here). With ACLs on, the token is resolved as the ACL layer resolves it
(:mod:`beacon.agent.http.acl_enforce`), and only a token that may read everything the answer holds is
answered here (a management token; ``key:read`` on the key for KV; for the health and service lists a
token whose reading keeps every item of the view); a denial or a reply the ACL layer would filter goes
to aiohttp, which answers it (the decisions: :mod:`beacon.agent.http.fastacl`). Heads are read by
:mod:`beacon.agent.http.fastparse`, answers written by :mod:`beacon.agent.http.fastanswer`; KV writes
(``PUT``/``DELETE /v1/kv/<key>``) on the same connections are :mod:`beacon.agent.http.fastwrite`'s.
Everything else, and everything after the first request a connection hands over, goes to aiohttp
unchanged: the aiohttp path
(:mod:`beacon.agent.http.core`, the route handlers) is the reference behaviour, and this path
answers only what it can answer byte for byte as that path would (tests/integration/test_fastpath.py
runs the same requests through both and compares them).

Why: a bare aiohttp handler spends most of a small read building the request (URL, headers
multidict, match info, a task) and the response object; for a view whose bytes are already cached,
that machinery is nearly all the work. Here one C parser (httptools, as uvicorn uses; it rejects
malformed and ambiguous requests, which then go to aiohttp for its error answer) reads the head, a
dict lookup finds the view, and the cached body goes to the transport with a formatted header block.

Blocking queries (``?index=N`` not yet reached) park the connection itself, with its wait index and
one deadline timer, in a per-view group; one write wakes the group with one read of the view and one
rendered answer shared by every watcher. No coroutine, future or aiohttp handler exists for a parked
query, which is what keeps an idle watcher small.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from beacon import telemetry
from beacon.agent.http.core import Encoded, encode_compact, encode_pretty
from beacon.agent.http.fastacl import FastACL
from beacon.agent.http.fastanswer import Clock, plain_answer, render_read
from beacon.agent.http.fastparse import HEALTH, KV, LABELS, HeadParser, Request, parse_target, token_of
from beacon.agent.http.fastwrite import HANDOFF, MORE, FastWrites, Write
from beacon.agent.http.limits import ConnectionGuard, GuardedProtocol
from beacon.agent.http.metrics import observe
from beacon.agent.http.views import views_of

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

log = logging.getLogger("beacon.agent.http")

MAX_HEAD = 8190          # aiohttp's own line limit: a longer head goes to aiohttp for its 4xx
MAX_PENDING = 64 * 1024  # bytes a parked or write-paused connection may send ahead before it is cut

class _Answered(Collector):
    """``beacon_http_fast_answers_total``: requests this path answered, reads and KV writes (read at
    scrape time; the tests use it to prove a request took this path and not aiohttp's)."""

    def __init__(self) -> None:
        self.paths: weakref.WeakSet[FastPath] = weakref.WeakSet()

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily("beacon_http_fast_answers", "HTTP reads from cached views and KV writes "
                                  "answered before aiohttp parsed them.", value=sum(p.answered for p in self.paths))


_answered = _Answered()
telemetry.REGISTRY.register(_answered)


class FastPath:
    """One agent's fast reads: its eligibility, its parked blocking queries and their wake-ups."""

    def __init__(self, agent: Agent, guard: ConnectionGuard, idle_timeout: float) -> None:
        self.agent = agent
        self.guard = guard
        self.idle_timeout = idle_timeout
        self.dev = agent.config.dev
        self.conns: set[FastProtocol] = set()
        # view key -> parked connections; hub key -> the view keys it wakes
        self.groups: dict[tuple[int, str, bool], set[FastProtocol]] = {}
        self.by_hub_key: dict[str, set[tuple[int, str, bool]]] = {}
        self.pending: set[tuple[int, str, bool]] = set()
        self.answered = 0  # requests answered here: tests prove the path is armed with it
        self.parked_total = 0
        self.clock = Clock()
        self.heads = HeadParser()
        self.barrier = agent.mode == "server"  # reads wait for the log (Agent.consistent_read)
        self.barrier_batch: list[FastProtocol] = []
        self.barrier_open = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.acl = FastACL(agent.acl) if agent.acl is not None else None
        self.writes = FastWrites(agent.submit, self.acl, agent.config.kv_max_value_size, self.heads, self.clock.date,
                                 self.tasks)
        self._sweeper: asyncio.TimerHandle | None = None
        agent.hub.listeners.append(self._changed)
        _answered.paths.add(self)

    def enabled(self) -> bool:
        """A server (whose state is local) and a token that resolves without waiting: checked per
        connection, as neither changes after start. Client agents relay reads to servers."""
        agent = self.agent
        return agent.mode in ("single", "server") and (agent.acl is None or agent.acl.fetch is None)

    # ------------------------------------------------------------------ read barriers (cluster servers)
    def join_barrier(self, conn: FastProtocol) -> None:
        self.barrier_batch.append(conn)
        if not self.barrier_open:
            self.barrier_open = True
            task = asyncio.get_running_loop().create_task(self._barrier())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _barrier(self) -> None:
        # Taken when the task starts: Agent.consistent_read joins the log's next linearizable read
        # before its first suspension, so that read starts after every request of this batch
        # arrived; requests arriving from now on start the next batch.
        batch, self.barrier_batch = self.barrier_batch, []
        self.barrier_open = False
        try:
            await self.agent.consistent_read(False, False)
            ok = True
        except Exception:  # NoLeaderError and the like: aiohttp's path answers each request's error
            ok = False
        for conn in batch:
            conn.after_barrier(ok)

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: FastProtocol(self.guard, inner, self)

    # ------------------------------------------------------------------ reading and rendering
    def read(self, req: Request) -> tuple[int, Encoded | None]:
        views = views_of(self.agent)  # per read: a snapshot restore may bring a new store
        if req.kind == KV:
            return views.kv_entry(req.arg)
        if req.kind == HEALTH:
            return views.health_service(req.arg, req.passing)
        return views.catalog_services()

    def render(self, req: Request, index: int, body: Encoded | None) -> tuple[bytes, bytes, int]:
        return render_read(self.agent.consensus, self.dev, req, index, body, self.clock.date())

    def status_leader(self, head: bytes) -> bytes | None:
        """``GET /v1/status/leader`` as status.py answers it (no X-Consul-* headers), or None for
        aiohttp's path. Clients poll it between KV requests on the same keep-alive connection, which
        would otherwise hand that connection to aiohttp for good."""
        parsed = self.heads.parse(head)
        if parsed is None or parsed[0] != b"/v1/status/leader":
            return None
        secret = token_of(parsed[1])
        if secret is None or (self.acl is not None and not self.acl.known(secret)):
            return None  # aiohttp's path answers "ACL not found" (the route itself needs no permission)
        consensus = self.agent.consensus
        value = consensus.leader_address() if consensus.known_leader() else ""
        body = encode_pretty(value) if self.dev else encode_compact(value)
        return plain_answer(200, b"application/json", body, self.clock.date())

    # ------------------------------------------------------------------ blocking queries
    def park(self, conn: FastProtocol, req: Request) -> None:
        cfg = self.agent.config
        wait = req.wait or cfg.default_query_time
        wait = min(wait, cfg.max_query_time)
        wait = min(wait + random.random() * wait / 16, cfg.max_query_time)  # Consul's jitter
        key = (req.kind, req.arg, req.passing)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = set()
            for hub_key in self.hub_keys(req):
                self.by_hub_key.setdefault(hub_key, set()).add(key)
        group.add(conn)
        self.agent.hub.waiting += 1  # the blocking-queries gauge counts these with aiohttp's
        self.parked_total += 1
        conn.parked = req
        conn.timer = asyncio.get_running_loop().call_later(wait, conn.expire)

    def unpark(self, conn: FastProtocol, answered: bool = False) -> None:
        """Take one watcher out of its group (``answered``: it stays marked parked for
        :meth:`FastProtocol.woken`, which answers it next)."""
        req = conn.parked
        if req is None:
            return
        if not answered:
            conn.parked = None
            if conn.timer is not None:
                conn.timer.cancel()
                conn.timer = None
        self.agent.hub.waiting -= 1
        key = (req.kind, req.arg, req.passing)
        group = self.groups.get(key)
        if group is not None:
            group.discard(conn)
            if not group:
                self.drop_group(key, req)

    def drop_group(self, key: tuple[int, str, bool], req: Request) -> None:
        del self.groups[key]
        for hub_key in self.hub_keys(req):
            keys = self.by_hub_key.get(hub_key)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.by_hub_key[hub_key]

    @staticmethod
    def hub_keys(req: Request) -> tuple[str, ...]:
        """What the aiohttp handlers of the same routes watch (kv.py, health.py, catalog.py)."""
        if req.kind == KV:
            return ("kv:" + req.arg,)
        if req.kind == HEALTH:
            return ("svc:" + req.arg.lower(),)
        return ("services", "nodes")

    def _changed(self, index: int, keys: set[str]) -> None:
        """A hub listener: runs on every change, possibly inside the store's write; only notes what
        to wake and wakes it on the next loop turn."""
        if not self.groups:
            return
        if "*" in keys:
            woken: set[tuple[int, str, bool]] = set(self.groups)
        else:
            woken = set()
            for key in keys:
                views = self.by_hub_key.get(key)
                if views:
                    woken |= views
        if woken:
            if not self.pending:
                asyncio.get_running_loop().call_soon(self._wake)
            self.pending |= woken

    def _wake(self) -> None:
        pending, self.pending = self.pending, set()
        for key in pending:
            group = self.groups.get(key)
            if not group:
                continue
            first = next(iter(group)).parked
            assert first is not None
            try:
                index, body = self.read(first)
            except Exception:  # a bug, not a client's doing: log it, and let the clients retry
                log.exception("fast path: reading %s for its blocking queries failed", LABELS[first.kind])
                for conn in list(group):
                    conn.abort()
                continue
            woken = [conn for conn in group if conn.parked is not None and index > conn.parked.index]
            if not woken:
                continue  # the view did not move past any watcher's index: all keep waiting
            if len(woken) == len(group):  # the usual case: the whole group at once, no per-watcher unpark
                self.drop_group(key, first)
                self.agent.hub.waiting -= len(woken)
            else:
                for conn in woken:
                    self.unpark(conn, answered=True)
            rendered: dict[tuple[int, bool, str], tuple[bytes, bytes, int]] = {}
            now, perf = asyncio.get_running_loop().time(), time.perf_counter()
            for conn in woken:
                req = conn.parked
                assert req is not None
                form = (req.consistency, req.pretty, req.coding)
                answer = rendered.get(form)
                if answer is None:
                    answer = rendered[form] = self.render(req, index, body)
                conn.woken(answer, now, perf)

    # ------------------------------------------------------------------ idle keep-alive
    def track(self, conn: FastProtocol) -> None:
        self.conns.add(conn)
        if self._sweeper is None and self.idle_timeout > 0:
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every(), self._sweep)

    def _sweep_every(self) -> float:
        return max(0.25, min(5.0, self.idle_timeout / 4))

    def _sweep(self) -> None:
        """Close fast connections idle for the keep-alive timeout, as aiohttp closes its own."""
        self._sweeper = None
        now = asyncio.get_running_loop().time()
        for conn in [c for c in self.conns
                     if c.parked is None and c.held is None and now - c.active >= self.idle_timeout]:
            conn.idle_close()
        if self.conns:
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every(), self._sweep)

    def close(self) -> None:
        """Close every fast connection (agent stop: aiohttp's runner does not know them)."""
        for task in self.tasks:
            task.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self.conns):
            conn.idle_close()
        if self._changed in self.agent.hub.listeners:
            self.agent.hub.listeners.remove(self._changed)


class FastProtocol(GuardedProtocol):
    """A guarded connection that answers fast reads itself until its first request that is not
    one; from then on (and for good) it hands every byte to aiohttp's handler."""

    __slots__ = ("_path", "_fast", "_buf", "_paused", "parked", "timer", "active", "held", "_unread")

    def __init__(self, guard: ConnectionGuard, factory: Callable[[], asyncio.Protocol], fast: FastPath) -> None:
        super().__init__(guard, factory)
        self._path = fast
        self._fast: FastPath | None = None  # set once admitted: a refused (429) connection stays None
        self._buf = b""
        self._paused = False
        self.parked: Request | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.active = 0.0
        # A request (and its head) waiting for a read barrier, or a write waiting for consensus.
        self.held: tuple[Request, bytes] | Write | None = None
        self._unread = False  # reading paused while a write is in flight and much is pipelined behind it

    # ------------------------------------------------------------------ connection
    def start(self, transport: Any) -> None:
        fast = self._path
        if not fast.enabled():
            super().start(transport)
            return
        self._fast = fast
        self.active = asyncio.get_running_loop().time()
        fast.track(self)

    def data_received(self, data: bytes) -> None:
        if self._fast is None:  # aiohttp's connection, or a refused one (the guard discards its bytes)
            super().data_received(data)
            return
        self._buf = self._buf + data if self._buf else data
        if self.parked is not None or self.held is not None or self._paused:
            if len(self._buf) > MAX_PENDING:
                if isinstance(self.held, Write) and self._transport is not None:
                    self._unread = True  # writes pipelined behind a write: TCP's flow control, as aiohttp
                    self._transport.pause_reading()
                else:
                    self.abort()
            return
        self._process()

    def eof_received(self) -> bool | None:
        if self._fast is None:
            return super().eof_received()
        return False  # close: a parked query whose client half-closed ends as aiohttp's would

    def connection_lost(self, exc: Exception | None) -> None:
        fast = self._fast
        if fast is not None:
            self._fast = None
            fast.conns.discard(self)
            req = self.parked
            if req is not None:
                fast.unpark(self)
                observe("GET", LABELS[req.kind], 499, time.perf_counter() - req.t0)  # as aiohttp's path
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        if self._fast is None:
            super().pause_writing()
            return
        self._paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._fast is None:
            super().resume_writing()
            return
        self._paused = False
        if self._transport is not None:
            self._transport.resume_reading()
            if self._buf and self.parked is None and self.held is None:
                self._process()

    # ------------------------------------------------------------------ requests
    def _process(self) -> None:
        fast = self._fast
        if fast is None:
            return
        buf, pos = self._buf, 0  # an offset, not a slice per request: a pipelined burst stays linear
        while pos < len(buf) and self.parked is None and self.held is None and not self._paused:
            end = buf.find(b"\r\n\r\n", pos)
            if end < 0:
                if len(buf) - pos > MAX_HEAD:
                    self._buf = buf[pos:]
                    self._handoff()
                    return
                break
            self.head_complete()
            if buf.startswith(b"GET /v1/status/leader ", pos):
                t0 = time.perf_counter()
                answer = fast.status_leader(buf[pos:end + 4])
                if answer is None:
                    self._buf = buf[pos:]
                    self._handoff()
                    return
                self.write_answer(answer)
                observe("GET", "/v1/status/leader", 200, time.perf_counter() - t0)
                pos = end + 4
                continue
            if buf[pos] != 71:  # not b"G": a KV write (fastwrite.py), or aiohttp's
                taken = fast.writes.take(self, buf, pos, end + 4)
                if taken == MORE:  # its body is not all here: wait for it (arriving bytes are not idleness)
                    self.active = asyncio.get_running_loop().time()
                    break
                if taken == HANDOFF:
                    self._buf = buf[pos:]
                    self._handoff()
                    return
                self._buf = buf[taken:]  # in flight: the rest waits for write_done
                return
            req = self._parse(buf[pos:end + 4])
            if req is not None and fast.barrier and req.consistency != 1:
                # A cluster server's default and ?consistent reads first wait for a linearizable
                # read of the log (Agent.consistent_read), shared by every request of a burst.
                self._buf = buf[end + 4:]
                self.held = (req, buf[pos:end + 4])
                fast.join_barrier(self)
                return
            if req is None or not self._serve(req):
                self._buf = buf[pos:]
                self._handoff()
                return
            pos = end + 4
        self._buf = buf[pos:] if pos else buf

    def _serve(self, req: Request) -> bool:
        """Answer or park a parsed request; False: aiohttp's path must answer it."""
        fast = self._fast
        assert fast is not None
        try:
            index, body = fast.read(req)
        except Exception:  # a bug, not a client's doing: aiohttp's path answers (and logs) it
            log.exception("fast path: reading %s failed; handing the request to aiohttp", LABELS[req.kind])
            return False
        if req.authz is not None and not ((req.index == 0 or index > req.index) and fast.acl is not None
                                          and fast.acl.readable(req, body)):
            return False  # the ACL layer would filter this reply, or it would park: aiohttp's path does both
        if req.index == 0 or index > req.index:
            self._answer(fast.render(req, index, body), req)
        else:
            fast.park(self, req)
        return True

    def after_barrier(self, ok: bool) -> None:
        """The read barrier this connection's request waited for is done (``ok``) or failed."""
        held, self.held = self.held, None
        if not isinstance(held, tuple) or self._fast is None:
            return
        req, head = held
        if not (ok and self.agent_knows_leader() and self._serve(req)):
            self._buf = head + self._buf  # aiohttp's path reads it again and answers (its 500, say)
            self._handoff()
            return
        if self._buf and self.parked is None and not self._paused:
            self._process()

    def _parse(self, head: bytes) -> Request | None:
        fast = self._fast
        assert fast is not None
        parsed = fast.heads.parse(head)
        if parsed is None:
            return None
        url, headers = parsed
        target = parse_target(url)
        if target is None:
            return None
        kind, arg, passing, index, wait, consistency, pretty = target
        if consistency != 1 and not self.agent_knows_leader():
            return None  # aiohttp's path answers its 500
        coding = ""
        accept = headers.get(b"accept-encoding")
        if accept is not None and b"gzip" in accept:  # core.render's test, then aiohttp's choice:
            coding = "deflate" if b"deflate" in accept.lower() else "gzip"  # deflate first, then gzip
        req = Request(kind, arg, passing, index, wait or 0.0, consistency, pretty, time.perf_counter(), coding)
        secret = token_of(headers)
        if secret is None or (fast.acl is not None and not fast.acl.allowed(req, secret)):
            return None
        return req

    def write_answer(self, answer: bytes) -> None:
        transport = self._transport
        assert transport is not None and self._fast is not None
        transport.write(answer)
        self._fast.answered += 1
        self.active = asyncio.get_running_loop().time()

    def write_done(self, answer: bytes) -> None:
        """The write this connection held its requests for is answered (FastWrites)."""
        self.held = None
        transport = self._transport
        if transport is None or self._fast is None:
            return  # the client left: the write stands, its answer goes nowhere
        self.write_answer(answer)
        if self._unread and not self._paused:
            self._unread = False
            transport.resume_reading()
        if self._buf and self.parked is None and not self._paused:
            self._process()

    def agent_knows_leader(self) -> bool:
        fast = self._fast
        return fast is not None and fast.agent.consensus.known_leader()

    def _answer(self, answer: tuple[bytes, bytes, int], req: Request) -> None:
        transport = self._transport
        assert transport is not None and self._fast is not None
        head, body, status = answer
        if body:
            transport.writelines((head, body))
        else:
            transport.write(head)
        self._fast.answered += 1
        self.active = asyncio.get_running_loop().time()
        observe("GET", LABELS[req.kind], status, time.perf_counter() - req.t0)

    def woken(self, answer: tuple[bytes, bytes, int], now: float, perf: float) -> None:
        """Answer a watcher its group has already let go (FastPath._wake): the per-watcher part
        of a wake-up, kept to a timer cancel, one write and the request tally."""
        req, self.parked = self.parked, None
        timer, self.timer = self.timer, None
        if timer is not None:
            timer.cancel()
        transport = self._transport
        if req is None or transport is None or self._fast is None:
            return
        head, body, status = answer
        if body:
            transport.writelines((head, body))
        else:
            transport.write(head)
        self._fast.answered += 1
        self.active = now
        observe("GET", LABELS[req.kind], status, perf - req.t0)
        if self._buf:
            self._process()

    def finish_parked(self, answer: tuple[bytes, bytes, int]) -> None:
        req = self.parked
        fast = self._fast
        if req is None or fast is None:
            return
        fast.unpark(self)
        self._answer(answer, req)
        if self._buf:
            self._process()

    def expire(self) -> None:
        """The wait is over: answer with the view as it is now (what blocking_query returns)."""
        self.timer = None
        req = self.parked
        fast = self._fast
        if req is None or fast is None:
            return
        try:
            index, body = fast.read(req)
        except Exception:
            log.exception("fast path: reading %s at a blocking query's deadline failed", LABELS[req.kind])
            self.abort()
            return
        self.finish_parked(fast.render(req, index, body))

    def _handoff(self) -> None:
        """From here on aiohttp serves this connection: it gets every byte not answered yet."""
        fast = self._fast
        assert fast is not None
        self._fast = None
        fast.conns.discard(self)
        buf, self._buf = self._buf, b""
        self.set_tail(buf)
        inner = self.start_inner()
        if self._paused:
            inner.pause_writing()
        if buf:
            inner.data_received(buf)

    def idle_close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

