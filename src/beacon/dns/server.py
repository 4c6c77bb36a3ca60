"""The DNS server: owns the UDP and TCP listeners, the answer caches and the recursor.

It runs in whatever event loop it is started in (the agent installs uvloop when available).
Every message goes through :meth:`DNSServer.handle`: a cache lookup, else
:func:`beacon.dns.router.route`, then either the answer, or a forward to the recursors whose
reply (or a SERVFAIL) is sent when it arrives. An unexpected error while answering is logged and
answered with SERVFAIL; it never stops a listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import Awaitable, Callable

from dnslib import QTYPE, RCODE, DNSRecord

from beacon import telemetry

from . import batch
from .cache import AnswerCache
from .catalog import Store, Tracking
from .config import DNSConfig
from .limits import udp_limit
from .protocol import TCPProtocol, UDPProtocol
from .recursor import Recursor, Recursors
from .router import Action, Context, route, servfail_for

log = logging.getLogger("beacon.dns")

MAX_PENDING_FORWARDS = 1024
UDP_RCVBUF = 4 << 20


class DNSServer:
    def __init__(self, store: Store, cfg: DNSConfig, recursor: Recursor | None = None,
                 cache_bytes: int = 32 << 20) -> None:
        self.store = store
        self.cfg = cfg
        self._own_recursor = recursor is None
        self.recursor: Recursor = recursor or Recursors(cfg.recursors, cfg.recursor_timeout,
                                                        cfg.recursor_strategy)
        self.udp_cache = AnswerCache(max_bytes=cache_bytes)
        self.tcp_cache = AnswerCache(max_bytes=cache_bytes)
        self.hits: dict[bytes, int] = {}
        self._rng = random.Random()
        self._tasks: set[asyncio.Task[None]] = set()
        self._udp: asyncio.DatagramTransport | None = None
        self._batch: batch.BatchUDP | None = None
        self._udp_closed: asyncio.Future[None] | None = None
        self._tcp: asyncio.Server | None = None
        self._tick: asyncio.TimerHandle | None = None
        # WAN federation: (datacenter) -> DNS listeners of that datacenter's servers (set by the agent)
        self.remote_targets: Callable[[str], Awaitable[list[tuple[str, int]]]] | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self, host: str = "127.0.0.1", port: int = 8600) -> tuple[int, int]:
        """Listen on UDP and TCP ``host:port`` (0 = one ephemeral port for both); return the ports."""
        loop = asyncio.get_running_loop()
        attempts = 8 if port == 0 else 1
        for attempt in range(attempts):
            udp_sock = _udp_socket(host, port)
            udp_port = udp_sock.getsockname()[1]
            try:
                tcp = await loop.create_server(lambda: TCPProtocol(self), host, udp_port, reuse_address=True)
            except OSError:
                udp_sock.close()
                if attempt == attempts - 1:
                    raise
                continue
            break
        self._batch = batch.serve(self, udp_sock) if os.environ.get("BEACON_DNS_UDP_BATCH", "1") != "0" else None
        if self._batch is not None:
            self._udp_closed = self._batch.closed
        else:
            transport, protocol = await loop.create_datagram_endpoint(lambda: UDPProtocol(self), sock=udp_sock)
            self._udp = transport
            self._udp_closed = protocol.closed
        self._tcp = tcp
        self._schedule_tick()
        tcp_port = tcp.sockets[0].getsockname()[1]
        log.info("DNS server listening on %s port %d (udp) %d (tcp)", host, udp_port, tcp_port)
        return udp_port, tcp_port

    async def stop(self) -> None:
        self.fold_hits()
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._batch is not None:
            self._batch.close()
            self._batch = None
        if self._udp_closed is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._udp_closed  # the port is free again once this fires
            self._udp_closed = None
        if self._tcp is not None:
            self._tcp.close()
            if hasattr(self._tcp, "close_clients"):
                self._tcp.close_clients()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._tcp.wait_closed()
            self._tcp = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def reload(self, cfg: DNSConfig) -> None:
        """Swap the configuration (and the recursors built from it); cached answers are dropped."""
        self.cfg = cfg
        if self._own_recursor:
            self.recursor = Recursors(cfg.recursors, cfg.recursor_timeout, cfg.recursor_strategy)
        self.udp_cache.clear()
        self.tcp_cache.clear()

    def _schedule_tick(self) -> None:
        self._tick = asyncio.get_running_loop().call_later(1.0, self._on_tick)

    def _on_tick(self) -> None:
        self.fold_hits()
        self.udp_cache.expire_timed()
        self.tcp_cache.expire_timed()
        self._schedule_tick()

    def fold_hits(self) -> None:
        """Count cached answers in the metrics: qtype from the question, rcode from the entry."""
        if not self.hits:
            return
        items = list(self.hits.items())
        self.hits.clear()
        for key, n in items:
            entry = self.udp_cache.entries.get(key)
            rcode = entry[3] if entry is not None else 0
            telemetry.dns_query(_qtype_name(key), RCODE.get(rcode, str(rcode)), count=n)

    # ------------------------------------------------------------------ requests
    def handle(self, data: bytes, tcp: bool, send: Callable[[bytes], None]) -> bool:
        """Answer ``data`` through ``send``, at once or later (recursion, another datacenter). False:
        the message is dropped and ``send`` will never be called."""
        if self.remote_targets is not None:
            dc = remote_datacenter(data, self.cfg)
            if dc:
                self._forward_remote(dc, data, tcp, send)
                return True
        cache = self.tcp_cache if tcp else self.udp_cache
        key = data[2:]
        index = self.store.catalog_version  # read before the catalog is: a racing write re-validates
        entry = cache.entries.get(key)
        if entry is not None and (entry[0] == index or cache.revalidate(key, entry, index, self.store)):
            send(data[:2] + entry[1]())
            return True
        tracking = Tracking(self.store)
        ctx = Context(tracking, self.cfg, tcp=tcp, variant=cache.next_variant(key), rng=self._rng)
        try:
            reply = route(data, ctx)
        except Exception:
            log.exception("DNS: error answering a query; replying SERVFAIL")
            if len(data) >= 12:
                send(servfail_for(data, ctx))
                return True
            return False
        if reply.action is Action.DROP:
            return False
        if reply.action is Action.RECURSE:
            self._forward(data, tcp, send, reply.wire)
            return True
        if reply.external and len(self._tasks) < MAX_PENDING_FORWARDS:
            task = asyncio.get_running_loop().create_task(
                self._complete_external(data, reply.wire, reply.external, tcp, send))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return True
        send(reply.wire)
        if len(reply.wire) >= 4:
            telemetry.dns_query(_qtype_name(key), RCODE.get(reply.wire[3] & 0x0F, "?"))
        if reply.cacheable:
            cache.add(key, index, reply.wire, reply.variants, reply.time_dependent, tracking.deps(), ctx.variant)
        return True

    def _forward(self, data: bytes, tcp: bool, send: Callable[[bytes], None], servfail: bytes) -> None:
        if len(self._tasks) >= MAX_PENDING_FORWARDS:
            send(servfail)
            return
        task = asyncio.get_running_loop().create_task(self._recurse(data, tcp, send, servfail))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forward_remote(self, dc: str, data: bytes, tcp: bool, send: Callable[[bytes], None]) -> None:
        """A name in another datacenter (``web.service.dc2.consul``): asked of that datacenter's servers,
        as Consul's server forwards the lookup over its WAN RPC; no server there -> NXDOMAIN."""
        async def ask() -> None:
            assert self.remote_targets is not None
            try:
                targets = await self.remote_targets(dc)
            except Exception as exc:
                log.debug("DNS: servers of %s: %s", dc, exc)
                targets = []
            answer = None
            if targets:
                answer = await Recursors([f"{h}:{p}" if ":" not in h else f"[{h}]:{p}" for h, p in targets],
                                         self.cfg.recursor_timeout).resolve(data, tcp)
            send(answer if answer is not None else nxdomain_for(data))

        if len(self._tasks) >= MAX_PENDING_FORWARDS:
            send(nxdomain_for(data))
            return
        task = asyncio.get_running_loop().create_task(ask())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _complete_external(self, data: bytes, wire: bytes, names: tuple[str, ...], tcp: bool,
                                 send: Callable[[bytes], None]) -> None:
        """Add the addresses of CNAME targets outside the domain, asked of the recursors: to the answer
        for A/AAAA/ANY questions, as SRV glue otherwise (Consul does the same). Whatever cannot be
        resolved, or would not fit a UDP reply, leaves the CNAME-only answer as it was."""
        try:
            reply = DNSRecord.parse(wire)
            qtype = reply.q.qtype
            wanted = [qtype] if qtype in (QTYPE.A, QTYPE.AAAA) else [QTYPE.A, QTYPE.AAAA]
            lookups = [(name, t) for name in names for t in wanted]
            answers = await asyncio.gather(*(self.recursor.resolve(DNSRecord.question(name, QTYPE[t]).pack(), False)
                                             for name, t in lookups), return_exceptions=True)
            added = False
            for answer in answers:
                if not isinstance(answer, bytes):
                    continue
                for rr in DNSRecord.parse(answer).rr:
                    if rr.rtype in (QTYPE.A, QTYPE.AAAA, QTYPE.CNAME):
                        (reply.add_answer if qtype in (QTYPE.A, QTYPE.AAAA, QTYPE.ANY) else reply.add_ar)(rr)
                        added = True
            if added:
                full = reply.pack()
                if tcp or len(full) <= udp_limit(DNSRecord.parse(data)):
                    wire = full
        except Exception:
            log.exception("DNS: resolving an external CNAME target failed; answering with the CNAME only")
        send(wire)

    async def _recurse(self, data: bytes, tcp: bool, send: Callable[[bytes], None], servfail: bytes) -> None:
        try:
            answer = await self.recursor.resolve(data, tcp)
        except Exception:
            log.exception("DNS: recursor error; replying SERVFAIL")
            answer = None
        send(answer if answer is not None else servfail)


_KINDS = ("service", "node", "query", "connect", "ingress", "virtual")


def remote_datacenter(data: bytes, cfg: DNSConfig) -> str:
    """The datacenter a query names when it is not this one (``<x>.service.<dc>.<domain>``,
    ``<x>.node.<dc>.dc.<domain>``), else ""."""
    try:
        labels = [str(lab, "ascii", "replace").lower() if isinstance(lab, bytes) else str(lab).lower()
                  for lab in DNSRecord.parse(data).q.qname.label]
    except Exception:
        return ""
    domain = [x for x in cfg.domain.strip(".").lower().split(".") if x]
    if len(labels) < len(domain) + 3 or labels[len(labels) - len(domain):] != domain:
        return ""
    rest = labels[:len(labels) - len(domain)]
    for i in range(len(rest) - 1, 0, -1):
        if rest[i] in _KINDS:
            suffix = rest[i + 1:]
            dc = suffix[0] if len(suffix) == 1 or (len(suffix) == 2 and suffix[1] == "dc") else ""
            return dc if dc and dc != cfg.datacenter else ""
    return ""


def nxdomain_for(data: bytes) -> bytes:
    """An authoritative NXDOMAIN echoing the question of `data` (for an unreachable datacenter)."""
    try:
        req = DNSRecord.parse(data)
    except Exception:
        return b""
    reply = req.reply()
    reply.header.rcode = RCODE.NXDOMAIN
    return reply.pack()


def _qtype_name(key: bytes) -> str:
    """The first question's type from a request without its ID (header rest, then the name)."""
    pos = 10
    try:
        while key[pos]:
            pos += key[pos] + 1
        return QTYPE.get(int.from_bytes(key[pos + 1:pos + 3], "big"), "?")
    except IndexError:
        return "?"


def _udp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
