from __future__ import annotations

import asyncio

from beacon.server.fsm import MessageType, StateStore
from beacon.server.watch import WatchHub


async def test_prefix_watch_wakes_for_keys_under_it_only() -> None:
    hub = WatchHub(asyncio.get_running_loop())
    store = StateStore(on_change=hub.notify_threadsafe)
    fut = hub.watch([], ["app/"])
    store.apply((MessageType.KVS, {"op": "set", "key": "other/x", "value": b"1"}))
    await asyncio.sleep(0)
    assert not fut.done()
    store.apply((MessageType.KVS, {"op": "set", "key": "app/deep/key", "value": b"1"}))
    await asyncio.sleep(0)
    assert fut.done()
    hub.unwatch(fut, [], ["app/"])
    assert hub.waiting == 0


async def test_key_watch_and_unwatch_leave_no_residue() -> None:
    hub = WatchHub(asyncio.get_running_loop())
    futs = [hub.watch(["kv:a"]) for _ in range(100)]
    for f in futs:
        hub.unwatch(f, ["kv:a"])
    assert hub._keys == {} and hub.waiting == 0


async def test_notify_from_another_thread_reaches_the_loop() -> None:
    loop = asyncio.get_running_loop()
    hub = WatchHub(loop)
    fut = hub.watch(["kv:x"])
    await loop.run_in_executor(None, hub.notify_threadsafe, 5, {"kv:x"})
    await asyncio.wait_for(fut, 2)


async def test_restore_wakes_everyone() -> None:
    hub = WatchHub(asyncio.get_running_loop())
    a = hub.watch(["svc:web"])
    b = hub.watch([], ["x/"])
    hub.notify(1, {"*"})
    assert a.done() and b.done()


async def test_prefix_watchers_of_several_lengths_wake_by_key_and_leave_no_residue() -> None:
    hub = WatchHub(asyncio.get_running_loop())
    prefixes = ["", "a", "app/", "app/web/", "apx", "app/web/config/more"]
    futs = {p: hub.watch([], [p]) for p in prefixes}
    again = hub.watch([], ["app/"])  # a second watcher of the same prefix
    hub.notify(7, {"kvs", "kv:app/web/conf"})
    woken = {p for p, f in futs.items() if f.done()}
    assert woken == {"", "a", "app/", "app/web/"}
    assert again.done()
    # A prefix popped by a write and watched again is counted again, and every unwatch (also of
    # the watchers a write already woke) leaves nothing behind.
    renewed = hub.watch([], ["app/web/"])
    hub.notify(8, {"kv:app/web/x"})
    assert renewed.done()
    for p, f in futs.items():
        hub.unwatch(f, [], [p])
    hub.unwatch(again, [], ["app/"])
    hub.unwatch(renewed, [], ["app/web/"])
    assert hub._prefixes == {} and hub._prefix_lens == {} and hub.waiting == 0
