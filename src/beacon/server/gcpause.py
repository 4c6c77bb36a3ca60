"""Keep Python's cyclic garbage collector from stalling the event loop over a large catalog.

The collector's full (generation 2) collection walks every container object the process holds. A
server holding a 172,000-instance catalog holds ~760,000 of them (records, their tag lists, index
sets): one full collection took 0.5 s (measured in process on this machine), and CPython starts one
each time a quarter more objects survived into the old generation, during a bulk load and under
health churn alike. Every DNS and HTTP answer waited behind it.

Two remedies, as large Python services apply them (``gc.freeze``, Python 3.7+):

* :func:`paused` around bulk building of acyclic data (decoding a snapshot, restoring one, building
  one): no collection runs while millions of objects are created in a row (measured: reading an
  archive of 40,000 instances 3.3 s with the collector on, 0.5-0.9 s paused). At the end of the
  outermost pause everything alive is *frozen* (moved to the collector's permanent generation,
  which no collection walks) instead of being walked by the next young collection (0.2-0.4 s after
  a 172,000-instance restore).
* :func:`install_freezer`: after any full collection that took longer than ``FREEZE_AFTER``, the
  survivors are frozen. They survived a full collection, so they are long-lived (catalog records);
  later full collections walk only what survived since, and stay around a few milliseconds.

Frozen objects are still freed by reference counting (a replaced record goes as before); what the
collector no longer finds is a reference *cycle* among objects that were alive at a freeze and die
later. The catalog's records hold no cycles; the cost is bounded by the transient cyclic objects
(a request in flight) alive at each freeze, and freezes come only after an expensive collection.
"""

from __future__ import annotations

import ctypes
import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

FREEZE_AFTER = 0.004  # CPU seconds: a full collection longer than this freezes what survived it
# A full collection every 2 young-generation (1) collections instead of 10, when a quarter more
# objects have survived (CPython's other condition): each walks what 2 of them promoted, not 10.
# Measured loading 172,000 instances in process: full collections 3-20 ms each (70 of them) instead
# of 25-260 ms (19), on a machine at load average 8.
FULL_EVERY = 2

_lock = threading.Lock()
_depth = 0
_was_enabled = False
_started = 0.0
stats = {"freezes": 0, "full_collections": 0, "longest_full_ms": 0.0}


@contextmanager
def paused() -> Iterator[None]:
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                # Whatever the pause built and kept is long-lived and acyclic: out of the collector's
                # sight, rather than walked object by object by the next young collection.
                gc.freeze()
                stats["freezes"] += 1
                gc.enable()


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    global _started
    if info.get("generation") != 2:
        return
    # CPU time of this thread, not wall time: on a busy machine a short collection can be preempted
    # for longer than it works, and only the work is the collector's to avoid.
    if phase == "start":
        _started = time.thread_time()
        return
    took = time.thread_time() - _started
    stats["full_collections"] += 1
    stats["longest_full_ms"] = max(stats["longest_full_ms"], took * 1000)
    if took > FREEZE_AFTER:
        gc.freeze()
        stats["freezes"] += 1


def install_freezer() -> None:
    """Freeze the survivors of every expensive full collection, from now on (idempotent)."""
    if _on_collection not in gc.callbacks:
        gc.callbacks.append(_on_collection)
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, FULL_EVERY)


def uninstall_freezer() -> None:
    while _on_collection in gc.callbacks:
        gc.callbacks.remove(_on_collection)


_libc: Any = None


def release_memory() -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``). After a restore,
    the replaced state's large blocks stay in the heap, counted in the RSS, until something reuses
    them (measured: 874 -> 674 MiB after a 172,000-instance restore, in 12 ms). A no-op elsewhere."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL("libc.so.6")  # not find_library: it runs ldconfig in a subprocess
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)
