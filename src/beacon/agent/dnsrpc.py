"""DNS on client agents with ACLs: answered under the client's own token, as Consul's are.

A client agent holds no catalog. With ACLs off it relays raw packets to a server's DNS listener
(:mod:`beacon.agent.dnsrelay`, the fast path). With ACLs on, the server's listener would answer with
the *server's* token, so instead each query goes to a server over the cluster's authenticated RPC
listener with the bytes, whether it came over TCP, and the client's DNS token (``acl.tokens.dns``,
else ``default``, else anonymous, read at every query so ``PUT /v1/agent/token/...`` applies at
once). It travels on one long-lived WebSocket per server (``/rpc-stream/dns``, authenticated as
every RPC is: see :mod:`beacon.agent.cluster`) with queries matched to answers by id: a POST per
query through aiohttp cost about 0.5 ms of CPU on the two agents, four times the raw relay.

The server answers with the same engine as its own listener (:class:`beacon.dns.DNSServer`:
routing, truncation, recursion, other datacenters), one engine per token, each reading through an
:class:`~beacon.acl.dns_view.ACLStore` of that token and holding its own answer caches, so no answer
built for one token is ever served to another. At most :data:`MAX_VIEWS` engines are kept (least
recently used first out) and all are dropped when the ACL tables change.

Failures: no server reachable, an RPC error, a stream lost with queries in flight, or no answer
in time (the stream is then reopened) -> SERVFAIL; a message the engine drops (too short, a
response) gets no answer, as on a server's own listener.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import random
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from beacon.acl import state
from beacon.acl.dns_view import ACLStore, agent_dns_token
from beacon.agent.dnsrelay import DNSRelay, servfail_reply

if TYPE_CHECKING:
    from aiohttp import web

    from beacon.acl.resolver import Resolver
    from beacon.agent.agent import Agent
    from beacon.agent.cluster import Codec
    from beacon.dns import DNSServer
    from beacon.server.fsm import StateStore

log = logging.getLogger("beacon.dns.rpc")

RPC_TIMEOUT = 4.0  # client: one call (the server gives up first, below)
ANSWER_TIMEOUT = 3.5  # server: an answer still pending (recursion, another datacenter) -> SERVFAIL
MAX_VIEWS = 128  # per-token engines a server keeps
VIEW_CACHE_BYTES = 512 << 10  # answer cache of one such engine, per transport
MAX_PENDING = 1024  # client: queries in flight; more are answered SERVFAIL at once


# ---------------------------------------------------------------------- server side
class TokenEngines:
    """A server's DNS engines for tokens sent by client agents (see the module docstring)."""

    def __init__(self, main: DNSServer, store: StateStore, resolver: Resolver | None) -> None:
        self.main = main
        self.store = store
        self.resolver = resolver
        self._engines: OrderedDict[str, tuple[DNSServer, float]] = OrderedDict()
        self._acl_index = -1

    def __len__(self) -> int:
        return len(self._engines)

    def engine(self, token: str) -> DNSServer:
        if self.resolver is None:
            return self.main  # ACLs are off here: the catalog as it is
        index = state.acl_index(self.store)
        if index != self._acl_index:  # every view's stamps move too; this also frees deleted tokens' views
            self._engines.clear()
            self._acl_index = index
        token = token or state.ANONYMOUS_SECRET
        now = time.monotonic()
        hit = self._engines.get(token)
        if hit is not None and hit[0].cfg is self.main.cfg:  # a config reload builds new engines
            engine, ticked = hit
            self._engines.move_to_end(token)
            if now - ticked >= 1.0:  # what the main listener's one-second tick does for its caches
                engine.udp_cache.expire_timed()
                engine.tcp_cache.expire_timed()
                self._engines[token] = (engine, now)
            return engine
        from beacon.dns import DNSServer

        engine = DNSServer(ACLStore(self.store, self.resolver, token), self.main.cfg,
                           recursor=self.main.recursor, cache_bytes=VIEW_CACHE_BYTES)
        engine.remote_targets = self.main.remote_targets
        self._engines[token] = (engine, now)
        while len(self._engines) > MAX_VIEWS:
            self._engines.popitem(last=False)
        return engine

    def ask(self, query: bytes, tcp: bool, token: str, reply: Callable[[bytes | None], None]) -> None:
        """Answer ``query`` under ``token`` through ``reply``, exactly once: the answer (at once, or
        when recursion or another datacenter answers), SERVFAIL after :data:`ANSWER_TIMEOUT`, or
        None when the engine drops the message."""
        done = False
        timer: asyncio.TimerHandle | None = None

        def finish(wire: bytes | None) -> None:
            nonlocal done
            if done:
                return
            done = True
            if timer is not None:
                timer.cancel()
            reply(wire)

        try:
            handled = self.engine(token).handle(query, tcp, finish)
        except Exception:  # handle answers its own errors; anything else must not end the stream
            log.exception("DNS: error answering a client agent's query; replying SERVFAIL")
            handled = True
            finish(servfail_reply(query))
        if not handled:
            finish(None)
        elif not done:
            timer = asyncio.get_running_loop().call_later(ANSWER_TIMEOUT, finish, servfail_reply(query))

    async def answer(self, query: bytes, tcp: bool, token: str) -> bytes | None:
        """:meth:`ask`, awaited."""
        fut: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self.ask(query, tcp, token, lambda wire: fut.done() or fut.set_result(wire))
        return await fut


async def serve_stream(agent: Agent, ws: web.WebSocketResponse, codec: Codec) -> None:
    """A server's end of one client agent's DNS stream. Each message (a :class:`Codec` body) is a
    list of ``[id, query, tcp, token]`` (query base64); each answer message a list of ``[id,
    answer]`` (base64, or None: dropped). The answers a message gets at once go back as one message;
    later ones (recursion) on their own."""
    engines = agent.dns_engines
    if engines is None:
        return
    loop = asyncio.get_running_loop()
    out: list[list[Any]] = []
    in_frame = False  # the loop below sends what the frame it handles answered at once
    tasks: set[asyncio.Task[None]] = set()

    async def flush() -> None:
        if not out or ws.closed:
            out.clear()
            return
        batch = out[:]
        out.clear()
        try:
            await ws.send_bytes(codec.encode(batch))
        except (ConnectionError, RuntimeError):
            pass  # the client went away: its queries die with it

    def reply(ident: Any, wire: bytes | None) -> None:
        out.append([ident, None if wire is None else base64.b64encode(wire).decode()])
        if not in_frame:
            task = loop.create_task(flush())
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    try:
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.BINARY:
                break
            calls = codec.decode(msg.data)  # one that fails authentication ends the stream
            in_frame = True
            try:
                for ident, encoded, tcp, token in calls:
                    query = base64.b64decode(encoded)
                    if len(query) < 12:
                        reply(ident, None)
                        continue
                    engines.ask(query, bool(tcp), str(token or ""), lambda wire, i=ident: reply(i, wire))
            finally:
                in_frame = False
            await flush()
    finally:
        for task in list(tasks):
            task.cancel()


# ---------------------------------------------------------------------- client side
class _Channel:
    """One open stream to one server: queries in flight by id, answers read by one task."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, codec: Codec) -> None:
        self.ws = ws
        self.codec = codec
        self.pending: dict[int, asyncio.Future[bytes | None]] = {}
        self._ids = itertools.count(1)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @property
    def closed(self) -> bool:
        return self.ws.closed or self._reader.done()

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type is not aiohttp.WSMsgType.BINARY:
                    break
                for ident, answer in self.codec.decode(msg.data):
                    fut = self.pending.pop(ident, None)
                    if fut is not None and not fut.done():
                        fut.set_result(None if answer is None else base64.b64decode(answer))
        except Exception as exc:
            log.debug("DNS stream: %r", exc)
        finally:
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("the server closed the DNS stream"))
            self.pending.clear()
            await self.ws.close()

    async def ask(self, query: bytes, tcp: bool, token: str) -> bytes | None:
        ident = next(self._ids)
        fut: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self.pending[ident] = fut
        try:
            await self.ws.send_bytes(self.codec.encode([[ident, base64.b64encode(query).decode(), tcp, token]]))
            async with asyncio.timeout(RPC_TIMEOUT):
                return await fut
        finally:
            self.pending.pop(ident, None)

    async def close(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self.ws.close()


class ServerAsker:
    """A client agent's side: one stream per server, opened on first use; keeps to one server while
    it answers, moves on when a stream cannot be opened (the query was not sent). The token is read
    per query."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._current = ""
        self._channels: dict[str, _Channel] = {}
        self._connecting: dict[str, asyncio.Future[_Channel]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        for ch in list(self._channels.values()):
            await ch.close()
        self._channels.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _channel(self, target: str, codec: Codec) -> _Channel:
        ch = self._channels.get(target)
        if ch is not None and not ch.closed:
            return ch
        waiting = self._connecting.get(target)
        if waiting is not None:  # a burst of queries opens one stream, not one each
            return await asyncio.shield(waiting)
        fut: asyncio.Future[_Channel] = asyncio.get_running_loop().create_future()
        self._connecting[target] = fut
        try:
            ch = _Channel(await self._connect(target), codec)
        except Exception as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: nobody else may be waiting
            raise
        except BaseException:
            fut.cancel()
            raise
        finally:
            del self._connecting[target]
        self._channels[target] = ch
        fut.set_result(ch)
        return ch

    async def _connect(self, target: str) -> aiohttp.ClientWebSocketResponse:
        from beacon.agent.cluster import RPCError, RPCNotSent

        if self._session is None:  # the stream lives long: no total timeout, only one for the connect
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=1.0))
        try:
            return await self._session.ws_connect(f"http://{target}/rpc-stream/dns", compress=0, autoping=True,
                                                  max_msg_size=4 << 20)
        except aiohttp.ClientConnectorError as exc:
            raise RPCNotSent(f"{target} dns: {exc}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise RPCError(f"{target} dns: {exc or type(exc).__name__}") from None

    async def __call__(self, query: bytes, tcp: bool) -> bytes | None:
        from beacon.agent.cluster import RPCError

        cluster = self.agent.cluster
        acl = self.agent.acl
        if cluster is None or acl is None:
            return servfail_reply(query)
        token = agent_dns_token(acl.tokens)
        current = self._current
        for m in sorted(cluster.servers(), key=lambda m: (m.name != current, random.random())):
            target = cluster.rpc_target(m)
            try:
                ch = await self._channel(target, cluster.codec)
            except RPCError as exc:  # refused, or no stream here (RPCNotSent too): the query was not sent
                log.debug("DNS: %s", exc)
                continue
            try:
                answer = await ch.ask(query, tcp, token)
            except TimeoutError:
                log.debug("DNS: no answer from %s in %.0f s; replying SERVFAIL", m.name, RPC_TIMEOUT)
                await ch.close()  # the next query opens a new stream (or finds another server)
                self._current = ""
                return servfail_reply(query)
            except (ConnectionError, aiohttp.ClientError, OSError) as exc:
                log.debug("DNS: %s: %r; replying SERVFAIL", m.name, exc)
                self._current = ""
                return servfail_reply(query)
            self._current = m.name
            return answer
        return servfail_reply(query)


class TokenRelay(DNSRelay):
    """The client agent's DNS listener with ACLs on: every query is asked through ``ask``."""

    def __init__(self, ask: ServerAsker) -> None:
        super().__init__(lambda: [], timeout=RPC_TIMEOUT)
        self.ask = ask
        self._tasks: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        await super().stop()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ask.close()

    def query(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12:
            return
        if len(self._tasks) >= MAX_PENDING:
            self._servfail(data, addr)
            return
        task = asyncio.get_running_loop().create_task(self._answer_udp(data, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ask(self, data: bytes, tcp: bool) -> bytes | None:
        try:
            return await self.ask(data, tcp)
        except Exception:
            log.exception("DNS: asking a server failed; replying SERVFAIL")
            return servfail_reply(data)

    async def _answer_udp(self, data: bytes, addr: tuple[str, int]) -> None:
        answer = await self._ask(data, False)
        if answer is not None and self._down is not None and self._down.transport is not None:
            self._down.transport.sendto(answer, addr)

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(2)
                query = await reader.readexactly(struct.unpack("!H", head)[0])
                if len(query) < 12:
                    continue
                answer = await self._ask(query, True)
                if answer is not None:
                    writer.write(struct.pack("!H", len(answer)) + answer)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, OSError):
            pass
        finally:
            writer.close()
