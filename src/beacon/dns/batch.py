"""UDP in batches: ``recvmmsg``/``sendmmsg`` (Linux) on the event loop's readiness callback.

asyncio's datagram transport makes one ``recvfrom`` and one ``sendto`` system call per query, turns
every sender address into a Python tuple and parses it back on the way out. Under load the DNS
server's queue holds several queries at each wake-up, so this reader takes up to :data:`BATCH`
of them with one ``recvmmsg`` and sends every cached answer with one ``sendmmsg``; a reply's
destination is the very ``sockaddr`` the kernel filled in on receipt (no conversion at all). A
cache hit costs a dict lookup and two buffer copies. Everything else (misses, forwards, errors)
goes through the same :meth:`Handler.handle` as the asyncio transport, with the address
converted once for that query.

The system calls are reached through :mod:`ctypes` (the standard library has no ``recvmmsg``);
where libc or the calls are missing, :func:`available` says so and the server keeps the asyncio
transport. Buffers are anonymous ``mmap`` s: pages the traffic never touches are never resident.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import logging
import mmap
import socket
import struct
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .protocol import Handler

log = logging.getLogger("beacon.dns")

BATCH = 64
SLOT = 65536  # one UDP datagram at most; a slot's untouched pages cost nothing (mmap)
NAME = 128  # sizeof(struct sockaddr_storage)
MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20
# struct mmsghdr on 64-bit Linux: struct msghdr (56 bytes) + unsigned msg_len, padded to 64.
MMSG = 64


class _IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.c_void_p),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint32)]


_libc: ctypes.CDLL | None = None


def _load() -> ctypes.CDLL | None:
    global _libc
    if _libc is not None:
        return _libc
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8 \
            or ctypes.sizeof(_MMsgHdr) != MMSG:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        for fn in (libc.recvmmsg, libc.sendmmsg):
            fn.restype = ctypes.c_int
        libc.recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
        libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    _libc = libc
    return libc


def available() -> bool:
    return _load() is not None


def _addr(name: bytes) -> tuple[str, int] | tuple[str, int, int, int] | None:
    """A ``sockaddr_in``/``sockaddr_in6`` as the tuple the socket module uses."""
    family = int.from_bytes(name[:2], sys.byteorder)
    port = int.from_bytes(name[2:4], "big")
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, name[4:8]), port
    if family == socket.AF_INET6:
        flow, = struct.unpack_from("!I", name, 4)
        scope, = struct.unpack_from("=I", name, 24)
        return socket.inet_ntop(socket.AF_INET6, name[8:24]), port, flow, scope
    return None


class BatchUDP:
    """Serves one bound, non-blocking UDP socket for ``handler`` on the running loop."""

    def __init__(self, handler: Handler, sock: socket.socket) -> None:
        libc = _load()
        assert libc is not None, "check available() first"
        self._recvmmsg = libc.recvmmsg
        self._sendmmsg = libc.sendmmsg
        self.handler = handler
        self.sock = sock
        self.fd = sock.fileno()
        self.entries = handler.udp_cache.entries
        self.hits = handler.hits
        self.store = handler.store
        self.loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self.loop.create_future()
        # Receive side: BATCH slots, each a datagram buffer and a sockaddr the kernel fills in.
        self._rbuf = mmap.mmap(-1, BATCH * SLOT)
        self._sbuf = mmap.mmap(-1, BATCH * SLOT)
        self._names = (ctypes.c_char * (BATCH * NAME))()
        self._riov = (_IOVec * BATCH)()
        self._siov = (_IOVec * BATCH)()
        self._rvec = (_MMsgHdr * BATCH)()
        self._svec = (_MMsgHdr * BATCH)()
        rbase = ctypes.addressof(ctypes.c_char.from_buffer(self._rbuf))
        sbase = ctypes.addressof(ctypes.c_char.from_buffer(self._sbuf))
        nbase = ctypes.addressof(self._names)
        self._name_addr = [nbase + i * NAME for i in range(BATCH)]
        for i in range(BATCH):
            self._riov[i].base, self._riov[i].len = rbase + i * SLOT, SLOT
            self._siov[i].base = sbase + i * SLOT
            r, s = self._rvec[i].hdr, self._svec[i].hdr
            r.name, r.namelen, r.iov, r.iovlen = self._name_addr[i], NAME, ctypes.addressof(self._riov[i]), 1
            s.iov, s.iovlen = ctypes.addressof(self._siov[i]), 1
        # Word views for the per-message fields the hot path reads and writes.
        self._rwords = memoryview(self._rvec).cast("B").cast("I")  # namelen @ 2, flags @ 12, len @ 14
        self._swords = memoryview(self._svec).cast("B").cast("Q")  # name @ 0, namelen @ 1
        self._siovw = memoryview(self._siov).cast("B").cast("Q")   # len @ 1
        self._rview = memoryview(self._rbuf)
        self._names_view = memoryview(self._names).cast("B")
        self._raddr = ctypes.addressof(self._rvec)
        self._saddr = ctypes.addressof(self._svec)
        # Per slot, the offsets the hot path uses (precomputed: no index arithmetic per datagram).
        self._in_slots = [(i, i * SLOT, i * 16 + 14, i * 16 + 12, i * 16 + 2, self._name_addr[i])
                          for i in range(BATCH)]
        self._out_slots = [(i * SLOT, i * 2 + 1, i * 8) for i in range(BATCH)]
        self._used = 0
        self._open = True
        self.loop.add_reader(self.fd, self._ready)

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        self.loop.remove_reader(self.fd)
        self.sock.close()
        if not self.closed.done():
            self.closed.set_result(None)

    def _ready(self) -> None:
        # Bounded: at most 8 batches per wake-up, so a flood cannot starve the rest of the loop.
        for _ in range(8):
            if not self._open or self._batch() < BATCH:
                return

    def _batch(self) -> int:
        rwords = self._rwords
        for i in range(self._used):  # the kernel shrank the address lengths of the slots it filled
            rwords[i * 16 + 2] = NAME
        n = self._recvmmsg(self.fd, self._raddr, BATCH, MSG_DONTWAIT, None)
        self._used = max(n, 0)
        if n <= 0:
            if n < 0 and ctypes.get_errno() not in (errno.EAGAIN, errno.EINTR):
                log.debug("recvmmsg: %s", errno.errorcode.get(ctypes.get_errno(), "?"))
            return 0
        entries, version, hits = self.entries, self.store.catalog_version, self.hits
        rbuf, sbuf, swords, siovw, outs = self._rbuf, self._sbuf, self._swords, self._siovw, self._out_slots
        out = 0
        for i, start, len_at, flags_at, namelen_at, name in self._in_slots[:n]:
            size = rwords[len_at]
            key = rbuf[start + 2:start + size]
            entry = entries.get(key)
            if entry is not None and entry[0] == version and not rwords[flags_at] & MSG_TRUNC:
                tail = entry[1]()
                dst, iov_len_at, name_at = outs[out]
                sbuf[dst:dst + 2] = rbuf[start:start + 2]
                sbuf[dst + 2:dst + 2 + len(tail)] = tail
                siovw[iov_len_at] = len(tail) + 2
                swords[name_at] = name
                swords[name_at + 1] = rwords[namelen_at]
                out += 1
                hits[key] = hits.get(key, 0) + 1  # folded into the metrics once a second
            else:
                self._slow(i, start, size)
        if out:
            self._flush(out)
        return n

    def _flush(self, count: int) -> None:
        sent = 0
        while sent < count:
            r = self._sendmmsg(self.fd, self._saddr + sent * MMSG, count - sent, MSG_DONTWAIT)
            if r <= 0:
                # A full send buffer (or a vanished peer): UDP answers are best effort, as sendto's are.
                sent += 1
                continue
            sent += r

    def _slow(self, i: int, start: int, size: int) -> None:
        if self._rwords[i * 16 + 12] & MSG_TRUNC:
            return  # larger than any DNS message over UDP: not a query we can parse
        data = self._rbuf[start:start + size]
        namelen = self._rwords[i * 16 + 2]
        addr = _addr(bytes(self._names_view[i * NAME:i * NAME + namelen]))
        if addr is None:
            return
        sock = self.sock

        def send(wire: bytes) -> None:
            if self._open:
                try:
                    sock.sendto(wire, addr)
                except OSError as exc:
                    log.debug("udp send: %r", exc)

        self.handler.handle(data, False, send)


def serve(handler: Handler, sock: socket.socket) -> BatchUDP | None:
    """Serve ``sock`` in batches if this platform can; None: use the asyncio transport."""
    if not available():
        return None
    try:
        return BatchUDP(handler, sock)
    except (OSError, NotImplementedError, RuntimeError) as exc:  # e.g. a loop without add_reader
        log.debug("batched UDP unavailable: %r", exc)
        return None


Send = Callable[[bytes], None]
