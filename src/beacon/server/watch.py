"""Watch keys and the hub that wakes blocking queries.

The state store reports, after every apply, the set of *watch keys* the command changed:

* table names: ``nodes``, ``services``, ``checks``, ``kvs``, ``sessions``
* ``svc:<name>`` (lower-cased service name): an instance, its checks or its node changed
* ``node:<name>`` (lower-cased node name): the node, its services or checks changed
* ``kv:<key>``: one KV key was written or deleted
* ``session:<id>``
* ``*``: everything (snapshot restore)

A query waits on the exact keys it read plus, for KV prefix reads, a *prefix*: a write to ``kv:K``
wakes the prefix watchers of every prefix of K. The hub counts its watched prefixes by length, so a
write costs one dict lookup per length that some watcher uses (typically one or two), not one per
character of its key, and never grows with the number of idle watchers.

The hub lives on the event loop. ``notify_threadsafe`` is what a Raft thread calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable


class WatchHub:
    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self._keys: dict[str, set[asyncio.Future[None]]] = {}
        self._prefixes: dict[str, set[asyncio.Future[None]]] = {}
        self._prefix_lens: dict[int, int] = {}  # length -> how many watched prefixes have it
        self.waiting = 0
        # Called on the loop after every change (alias checks); keep them cheap.
        self.listeners: list[Callable[[int, set[str]], None]] = []

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @staticmethod
    def _wake(futs: set[asyncio.Future[None]] | None) -> None:
        if futs:
            for fut in futs:
                if not fut.done():
                    fut.set_result(None)

    def notify(self, index: int, keys: set[str]) -> None:
        for listener in self.listeners:
            listener(index, keys)
        if "*" in keys:
            for group in (self._keys, self._prefixes):
                for futs in group.values():
                    self._wake(futs)
            return
        pop_key = self._keys.pop
        for key in keys:
            self._wake(pop_key(key, None))
            if self._prefix_lens and key.startswith("kv:"):
                kv_key = key[3:]
                for n in tuple(self._prefix_lens):
                    if n <= len(kv_key):
                        futs = self._prefixes.pop(kv_key[:n], None)
                        if futs is not None:
                            self._forget_len(n)
                            self._wake(futs)

    def notify_threadsafe(self, index: int, keys: set[str]) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.notify(index, keys)
        else:
            loop.call_soon_threadsafe(self.notify, index, keys)

    def watch(self, keys: Iterable[str], prefixes: Iterable[str] = ()) -> asyncio.Future[None]:
        loop = self._loop or asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        for key in keys:
            self._keys.setdefault(key, set()).add(fut)
        for prefix in prefixes:
            futs = self._prefixes.get(prefix)
            if futs is None:
                futs = self._prefixes[prefix] = set()
                self._prefix_lens[len(prefix)] = self._prefix_lens.get(len(prefix), 0) + 1
            futs.add(fut)
        self.waiting += 1
        return fut

    def unwatch(self, fut: asyncio.Future[None], keys: Iterable[str], prefixes: Iterable[str] = ()) -> None:
        self.waiting -= 1
        for group, names in ((self._keys, keys), (self._prefixes, prefixes)):
            for name in names:
                futs = group.get(name)
                if futs is not None:
                    futs.discard(fut)
                    if not futs:
                        del group[name]
                        if group is self._prefixes:
                            self._forget_len(len(name))

    def _forget_len(self, n: int) -> None:
        left = self._prefix_lens[n] - 1
        if left:
            self._prefix_lens[n] = left
        else:
            del self._prefix_lens[n]
