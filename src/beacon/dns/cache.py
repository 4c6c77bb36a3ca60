"""Answer cache: response bytes per request bytes, valid while the catalog is unchanged.

The key is the request after its 2-byte ID (flags, question, EDNS options: everything the answer
depends on besides the catalog and the config); the value holds the response after *its* ID, so a
hit is ``request[:2] + tail``. Shuffling stays honest: a key whose answer has several orders keeps
one tail per order (every order for up to 4 instances, else 24 random ones) and a hit serves the
next one in turn. The tails are collected lazily, one per miss, so a one-off question costs one
build. Answers that carry an SOA serial (the current second) are dropped every second.

The hot path reads :attr:`AnswerCache.entries` directly: ``(index, next_tail)`` per key.

An entry also remembers what its answer read (:attr:`AnswerCache.deps`: the per-service and
per-node indexes, see :class:`beacon.dns.catalog.Tracking`). When the catalog version moves, the next
query for the key re-checks those few indexes and, if none moved, re-stamps the entry with the new
catalog version instead of rebuilding it: a service re-registered 50 times a second invalidates its
own answers only. An answer that read anything else (a reverse lookup walks every node) has no
deps and is rebuilt after any catalog change.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

Entry = tuple[int, Callable[[], bytes], int, int]
# (store attribute, key, value when read); the attribute None means the store's restore generation.
Deps = tuple[tuple[str | None, str, int], ...]


class AnswerCache:
    def __init__(self, max_bytes: int = 32 << 20, max_entry_bytes: int = 16 << 10) -> None:
        self.entries: dict[bytes, Entry] = {}
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self._bytes = 0
        self._warming: dict[bytes, tuple[int, list[bytes], Deps | None]] = {}
        self._timed: set[bytes] = set()
        self.deps: dict[bytes, Deps] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def next_variant(self, key: bytes) -> int:
        """Which answer order to build next for ``key`` (0 unless some are already collected; whether
        the collection still holds is decided when the build is added)."""
        warming = self._warming.get(key)
        return 0 if warming is None else len(warming[1])

    def revalidate(self, key: bytes, entry: Entry, index: int, store: object) -> bool:
        """Is ``entry`` (stamped with an older catalog version) still the answer at ``index``? If what
        it read is unchanged, re-stamp it (the next query takes the inline fast path) and say yes."""
        deps = self.deps.get(key)
        if deps is None:
            return False
        for attr, name, version in deps:
            current = getattr(store, "generation", 0) if attr is None else getattr(store, attr).get(name, 0)
            if current != version:
                return False
        self.entries[key] = (index, *entry[1:])  # type: ignore[assignment]
        return True

    def add(self, key: bytes, index: int, wire: bytes, variants: int, time_dependent: bool,
            deps: Deps | None = None, variant: int = 0) -> None:
        """Record one built answer (order number ``variant``, from :meth:`next_variant`); the entry
        goes live once all ``variants`` orders are in.

        The orders collected so far stay valid across catalog versions while what the answer read
        is unchanged (equal deps): under churn elsewhere the version moves between nearly every two
        queries, and restarting the collection at each version kept a several-instance answer from
        ever going live (every query rebuilt it). An answer without deps keeps its orders only at
        one catalog version."""
        if len(wire) > self.max_entry_bytes:
            return
        tail = wire[2:]
        if variants <= 1:
            self._store(key, index, [tail], time_dependent, deps)
            return
        warming = self._warming.get(key)
        if warming is not None and (variant != len(warming[1]) or (
                warming[0] != index and (deps is None or deps != warming[2]))):
            del self._warming[key]  # what the answer read changed: start over
            warming = None
        if warming is None:
            if variant != 0:
                return  # built for a collection that no longer holds: answered, not kept
            if len(self._warming) >= 4096:
                self._warming.clear()
            warming = (index, [], deps)
        warming[1].append(tail)
        warming = (index, warming[1], warming[2])
        self._warming[key] = warming
        if len(warming[1]) >= variants:
            del self._warming[key]
            # The first build's deps: they are the oldest reads, so a change after any variant was
            # built fails the re-check.
            self._store(key, index, warming[1], time_dependent, None if deps is None else warming[2])

    def _store(self, key: bytes, index: int, tails: list[bytes], time_dependent: bool,
               deps: Deps | None) -> None:
        size = len(key) + sum(len(t) for t in tails)
        old = self.entries.pop(key, None)
        if old is not None:
            self._bytes -= old[2]
        while self.entries and self._bytes + size > self.max_bytes:
            oldest = next(iter(self.entries))
            self._bytes -= self.entries.pop(oldest)[2]
            self._timed.discard(oldest)
            self.deps.pop(oldest, None)
        next_tail = itertools.repeat(tails[0]).__next__ if len(tails) == 1 else itertools.cycle(tails).__next__
        rcode = tails[0][1] & 0x0F if len(tails[0]) > 1 else 0
        self.entries[key] = (index, next_tail, size, rcode)  # rcode: for metrics
        # Only now: a live entry and its deps change together (an older entry stays live while
        # the new one collects its variants, and must not be re-validated with the new deps).
        if deps is None:
            self.deps.pop(key, None)
        else:
            self.deps[key] = deps
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
        self.deps.clear()
        self._warming.clear()
        self._timed.clear()
        self._bytes = 0
