"""DNS on client agents with ACLs: answered under the client's own token, as Consul's are.

A client agent holds no catalog. With ACLs off it relays raw packets to a server's DNS listener
(:mod:`beacon.agent.dnsrelay`, the fast path). With ACLs on, the server's listener would answer with
the *server's* token, so instead each query goes over the servers' authenticated RPC (``dns``) with
the bytes, whether it came over TCP, and the client's DNS token (``acl.tokens.dns``, else
``default``, else anonymous, read at every query so ``PUT /v1/agent/token/...`` applies at once).

The server answers with the same engine as its own listener (:class:`beacon.dns.DNSServer`:
routing, truncation, recursion, other datacenters), one engine per token, each reading through an
:class:`~beacon.acl.dns_view.ACLStore` of that token and holding its own answer caches, so no answer
built for one token is ever served to another. At most :data:`MAX_VIEWS` engines are kept (least
recently used first out) and all are dropped when the ACL tables change.

Failures: no server reachable, an RPC error or no answer in time -> SERVFAIL; a message the engine
drops (too short, a response) gets no answer, as on a server's own listener.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import struct
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from beacon.acl import state
from beacon.acl.dns_view import ACLStore, agent_dns_token
from beacon.agent.dnsrelay import DNSRelay, servfail_reply

if TYPE_CHECKING:
    from beacon.acl.resolver import Resolver
    from beacon.agent.agent import Agent
    from beacon.dns import DNSServer
    from beacon.server.fsm import StateStore

log = logging.getLogger("beacon.dns.rpc")

RPC_TIMEOUT = 4.0  # client: one call (the server gives up first, below)
ANSWER_TIMEOUT = 3.5  # server: an answer still pending (recursion, another datacenter) -> SERVFAIL
MAX_VIEWS = 128  # per-token engines a server keeps
VIEW_CACHE_BYTES = 512 << 10  # answer cache of one such engine, per transport
MAX_PENDING = 1024  # client: queries in flight; more are answered SERVFAIL at once

Ask = Callable[[bytes, bool], Awaitable[bytes | None]]


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

    async def answer(self, query: bytes, tcp: bool, token: str) -> bytes | None:
        """The answer to ``query`` under ``token``; None when the engine drops the message."""
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def send(wire: bytes) -> None:
            if not fut.done():
                fut.set_result(wire)

        if not self.engine(token).handle(query, tcp, send):
            return None
        if fut.done():
            return fut.result()
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT):
                return await fut
        except TimeoutError:
            return servfail_reply(query)


async def serve_rpc(agent: Agent, payload: dict[str, Any]) -> dict[str, Any]:
    """The server's ``dns`` RPC: ``{query, tcp, token}`` -> ``{answer}`` (base64, or None: dropped)."""
    engines = agent.dns_engines
    if engines is None:
        raise RuntimeError("this server has no DNS interface")
    query = base64.b64decode(payload["query"])
    if len(query) < 12:
        return {"answer": None}
    answer = await engines.answer(query, bool(payload.get("tcp")), str(payload.get("token") or ""))
    return {"answer": None if answer is None else base64.b64encode(answer).decode()}


# ---------------------------------------------------------------------- client side
class ServerAsker:
    """A client agent's side of the ``dns`` RPC: keeps to one server while it answers (its
    connection stays open), moves on when a server refuses the connection."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._current = ""

    async def __call__(self, query: bytes, tcp: bool) -> bytes | None:
        from beacon.agent.cluster import RPCError, RPCNotSent

        cluster = self.agent.cluster
        acl = self.agent.acl
        if cluster is None or acl is None:
            return servfail_reply(query)
        payload = {"query": base64.b64encode(query).decode(), "tcp": tcp, "token": agent_dns_token(acl.tokens)}
        current = self._current
        for m in sorted(cluster.servers(), key=lambda m: (m.name != current, random.random())):
            try:
                out = await cluster.call(cluster.rpc_target(m), "dns", payload, timeout=RPC_TIMEOUT)
            except RPCNotSent as exc:
                log.debug("DNS: %s", exc)
                continue
            except RPCError as exc:
                log.debug("DNS: %s; replying SERVFAIL", exc)
                self._current = ""
                return servfail_reply(query)
            self._current = m.name
            answer = out.get("answer") if isinstance(out, dict) else None
            return None if answer is None else base64.b64decode(answer)
        return servfail_reply(query)


class TokenRelay(DNSRelay):
    """The client agent's DNS listener with ACLs on: every query is asked through ``ask``."""

    def __init__(self, ask: Ask) -> None:
        super().__init__(lambda: [], timeout=RPC_TIMEOUT)
        self.ask = ask
        self._tasks: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        await super().stop()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

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
