"""Answer cache: response bytes per request bytes, valid while the catalog index is unchanged.

The key is the request after its 2-byte ID (flags, question, EDNS options: everything the answer
depends on besides the catalog and the config); the value holds the response after *its* ID, so a
hit is ``request[:2] + tail``. Shuffling stays honest: a key whose answer has several orders keeps
one tail per order (every order for up to 4 instances, else 24 random ones) and a hit serves the
next one in turn. The tails are collected lazily, one per miss, so a one-off question costs one
build. Answers that carry an SOA serial (the current second) are dropped every second.

The hot path reads :attr:`AnswerCache.entries` directly: ``(index, next_tail)`` per key.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

Entry = tuple[int, Callable[[], bytes], int]


class AnswerCache:
    def __init__(self, max_bytes: int = 32 << 20, max_entry_bytes: int = 16 << 10) -> None:
        self.entries: dict[bytes, Entry] = {}
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self._bytes = 0
        self._warming: dict[bytes, tuple[int, list[bytes]]] = {}
        self._timed: set[bytes] = set()

    def __len__(self) -> int:
        return len(self.entries)

    def next_variant(self, key: bytes, index: int) -> int:
        """Which answer order to build next for ``key`` (0 unless some are already collected)."""
        warming = self._warming.get(key)
        if warming is None or warming[0] != index:
            return 0
        return len(warming[1])

    def add(self, key: bytes, index: int, wire: bytes, variants: int, time_dependent: bool) -> None:
        """Record one built answer; the entry goes live once all ``variants`` orders are in."""
        if len(wire) > self.max_entry_bytes:
            return
        tail = wire[2:]
        if variants <= 1:
            self._store(key, index, [tail], time_dependent)
            return
        warming = self._warming.get(key)
        if warming is None or warming[0] != index:
            if len(self._warming) >= 4096:
                self._warming.clear()
            warming = (index, [])
            self._warming[key] = warming
        warming[1].append(tail)
        if len(warming[1]) >= variants:
            del self._warming[key]
            self._store(key, index, warming[1], time_dependent)

    def _store(self, key: bytes, index: int, tails: list[bytes], time_dependent: bool) -> None:
        size = len(key) + sum(len(t) for t in tails)
        old = self.entries.pop(key, None)
        if old is not None:
            self._bytes -= old[2]
        while self.entries and self._bytes + size > self.max_bytes:
            oldest = next(iter(self.entries))
            self._bytes -= self.entries.pop(oldest)[2]
            self._timed.discard(oldest)
        next_tail = itertools.repeat(tails[0]).__next__ if len(tails) == 1 else itertools.cycle(tails).__next__
        rcode = tails[0][1] & 0x0F if len(tails[0]) > 1 else 0
        self.entries[key] = (index, next_tail, size, rcode)  # rcode: for metrics
        self._bytes += size
        if time_dependent:
            self._timed.add(key)

    def expire_timed(self) -> None:
        """Drop answers whose SOA serial (a Unix time) is now stale."""
        for key in self._timed:
            entry = self.entries.pop(key, None)
            if entry is not None:
                self._bytes -= entry[2]
        self._timed.clear()

    def clear(self) -> None:
        self.entries.clear()
        self._warming.clear()
        self._timed.clear()
        self._bytes = 0
