"""The single server's command log: fsync'd records, snapshots, torn tails, corruption."""

from __future__ import annotations

import asyncio
import os

import pytest

from beacon.server.consensus import SingleServer
from beacon.server.durable import CommandLog, DataDirError
from beacon.server.fsm import MessageType, StateStore


def put(key: str, value: bytes) -> tuple[int, dict]:
    return (MessageType.KVS, {"op": "set", "key": key, "value": value})


async def run_server(data_dir: str, commands: list) -> StateStore:
    store = StateStore()
    server = SingleServer(store, "127.0.0.1:8300", "id", "n1", data_dir)
    await server.start()
    results = await asyncio.gather(*(server.submit(c) for c in commands))
    assert all(r.error is None for r in results)
    await server.stop()
    return store


async def reopen(data_dir: str) -> StateStore:
    store = StateStore()
    server = SingleServer(store, "127.0.0.1:8300", "id", "n1", data_dir)
    await server.start()
    await server.stop()
    return store


async def test_acknowledged_writes_survive_restart(tmp_path) -> None:
    d = str(tmp_path)
    before = await run_server(d, [put(f"k{i}", b"\x00v%d" % i) for i in range(50)])
    after = await reopen(d)
    assert after.snapshot() == before.snapshot()
    assert after.kv_get("k7")[1].value == b"\x00v7"


async def test_snapshot_then_log_replay(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(SingleServer, "SNAPSHOT_EVERY", 10)
    d = str(tmp_path)
    before = await run_server(d, [put(f"k{i}", b"v") for i in range(25)])
    assert os.path.exists(os.path.join(d, "server", "snapshot.json"))
    after = await reopen(d)
    assert after.index == before.index == 25
    assert after.snapshot() == before.snapshot()


async def test_torn_tail_is_dropped_with_the_rest_kept(tmp_path) -> None:
    d = str(tmp_path)
    await run_server(d, [put("a", b"1"), put("b", b"2")])
    path = os.path.join(d, "server", "commands.log")
    with open(path, "ab") as f:
        f.write(b"\x40\x00\x00\x00\x12\x34")  # a header and a few bytes of a record cut by a crash
    after = await reopen(d)
    assert after.kv_get("b")[1].value == b"2"
    # and the log is usable again
    after2 = await run_server(d, [put("c", b"3")])
    assert after2.kv_get("c")[1].value == b"3"


async def test_corruption_in_the_middle_refuses_to_start(tmp_path) -> None:
    d = str(tmp_path)
    await run_server(d, [put(f"k{i}", b"value") for i in range(5)])
    path = os.path.join(d, "server", "commands.log")
    data = bytearray(open(path, "rb").read())
    data[20] ^= 0xFF  # flip a byte inside the first record
    open(path, "wb").write(bytes(data))
    with pytest.raises(DataDirError, match="corrupt"):
        await reopen(d)


async def test_corrupt_snapshot_is_reported(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(SingleServer, "SNAPSHOT_EVERY", 3)
    d = str(tmp_path)
    await run_server(d, [put(f"k{i}", b"v") for i in range(5)])
    snap = os.path.join(d, "server", "snapshot.json")
    with open(snap, "r+b") as f:
        f.truncate(os.path.getsize(snap) - 10)
    with pytest.raises(DataDirError, match="snapshot"):
        await reopen(d)


def test_log_skips_records_already_in_the_snapshot(tmp_path) -> None:
    log = CommandLog(str(tmp_path))
    log.append([(1, 3, {"op": "set", "key": "a", "value": b"1"}), (2, 3, {"op": "set", "key": "b"})])
    store = StateStore()
    store.apply((3, {"op": "set", "key": "a", "value": b"1"}))
    body_snapshot = store.snapshot()
    # crash between writing the snapshot and truncating the log: both exist
    import hashlib

    from beacon.server.durable import atomic_write, encode

    body = encode(body_snapshot)
    atomic_write(log.snapshot_path, b"sha256:" + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
    snap, records = CommandLog(str(tmp_path)).load()
    assert snap["index"] == 1
    assert [r[0] for r in records] == [2]
