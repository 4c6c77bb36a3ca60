"""Chunked snapshot restores on the etcd log (beacon.server.etcd_restore): what the state machine
applies in place of the reference, and that a read at the log entry's revision gives every server
the same answer (a real etcd on loopback: later deletes do not change it, compaction is reported)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time

import orjson
import pytest

from beacon.errors import Failed
from beacon.server import commands as cmd
from beacon.server import durable, etcd_restore
from beacon.server.etcd_client import EtcdClient, EtcdCompacted, prefix_end
from beacon.server.fsm import StateStore


def _state(n: int) -> dict:
    store = StateStore()
    for i in range(n):
        result = store.apply(cmd.Register(node=f"n{i % 50}", address=f"10.0.{i % 50}.1",
                                          service={"id": f"web-{i}", "service": "web", "port": 1000 + i}))
        assert result.error is None
    return store.snapshot()


def _plain(doc: dict) -> dict:
    """A decoded state with its rows as dicts (the decoder gives model records)."""
    return orjson.loads(durable.encode(doc))


def _ref(chunks: list[bytes], **kw) -> cmd.SnapshotRestoreChunks:
    import hashlib

    data = b"".join(chunks)
    fields = {"name": "1-x", "chunks": len(chunks), "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
              "now": 5.0, **kw}
    return cmd.SnapshotRestoreChunks(**fields)


def _split(snapshot: dict, size: int) -> list[bytes]:
    data = etcd_restore._compress(snapshot)
    return [data[i:i + size] for i in range(0, len(data), size)]


def test_verify_gives_back_the_state_and_refuses_any_damage() -> None:
    snap = _state(200)
    chunks = _split(snap, 300)
    assert len(chunks) > 2
    assert _plain(etcd_restore.verify(_ref(chunks), chunks)) == snap
    with pytest.raises(etcd_restore.RestoreChunksInvalid):
        etcd_restore.verify(_ref(chunks), chunks[:-1])  # a chunk missing
    with pytest.raises(etcd_restore.RestoreChunksInvalid):
        etcd_restore.verify(_ref(chunks), [chunks[0][:-1] + b"\0", *chunks[1:]])  # altered
    with pytest.raises(etcd_restore.RestoreChunksInvalid):
        etcd_restore.verify(_ref(chunks), [chunks[1], chunks[0], *chunks[2:]])  # out of order
    bad = [b"not zlib at all"]
    with pytest.raises(etcd_restore.RestoreChunksInvalid):
        etcd_restore.verify(_ref(bad), bad)  # the hash matches what was stored, the content is junk


def test_references_find_the_chunked_restores_of_an_envelope() -> None:
    ref = _ref([b"abc"])
    env = {"t": 1.0, "b": [{"i": "a", "x": 9.0, "c": list(cmd.encode(cmd.KVSet(key="k", value=b"v")))},
                           {"i": "b", "x": 9.0, "c": list(cmd.encode(ref))},
                           {"i": "c", "x": 9.0, "c": [cmd.MessageType.SNAPSHOT_RESTORE_CHUNKS, {"bogus": 1}]}]}
    assert etcd_restore.references(env) == [(1, ref)]
    assert etcd_restore.references({"t": 1.0}) == []


def test_an_unresolved_reference_fails_as_a_domain_error_and_changes_nothing() -> None:
    store = StateStore()
    store.apply(cmd.KVSet(key="k", value=b"v"))
    before = store.snapshot()
    result = store.apply(cmd.encode(_ref([b"abc"])), index=7000)
    assert isinstance(result.error, Failed) and "missing or corrupt" in result.error.message
    assert store.snapshot()["kv"] == before["kv"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def etcd(tmp_path):
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed")
    cport, pport = _free_port(), _free_port()
    url = f"http://127.0.0.1:{cport}"
    proc = subprocess.Popen(
        ["etcd", "--name", "t", "--data-dir", str(tmp_path / "etcd"), "--listen-client-urls", url,
         "--advertise-client-urls", url, "--listen-peer-urls", f"http://127.0.0.1:{pport}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
         "--initial-cluster", f"t=http://127.0.0.1:{pport}", "--log-level", "warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:  # ready: its client port accepts connections
            try:
                socket.create_connection(("127.0.0.1", cport), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        proc.kill()
        proc.wait(10)


async def test_every_reader_at_the_entry_revision_sees_the_same_chunks(etcd, monkeypatch) -> None:
    monkeypatch.setattr(etcd_restore, "CHUNK", 512)  # several chunks from a small state
    client = EtcdClient([etcd], timeout=10)
    prefix = b"/beacon/t/"
    try:
        for _ in range(100):  # the first requests may race etcd's own start-up
            try:
                await client.put(prefix + b"log", b"{}")
                break
            except Exception:
                await asyncio.sleep(0.1)
        snap = _state(300)
        ref = await etcd_restore.stage(client, prefix, snap, now=12.0)
        assert ref.chunks > 2 and ref.now == 12.0
        rev = await client.put(prefix + b"log", b"the entry naming it")
        env = {"t": 1.0, "b": [{"i": "r", "x": 9.0, "c": list(cmd.encode(ref))}]}
        got = await etcd_restore.resolve(client, prefix, env, rev)
        assert list(got) == [0] and isinstance(got[0], cmd.SnapshotRestore) and got[0].now == 12.0
        assert _plain(got[0].snapshot) == snap

        # The leader deletes the set once a snapshot covers it: a late reader at `rev` still gets it.
        assert await etcd_restore.collect(client, prefix, rev, {ref.name: rev}) == [ref.name]
        base = etcd_restore.set_prefix(prefix, ref.name)
        assert (await client.range(base, prefix_end(base)))[1] == []
        assert _plain(await etcd_restore.fetch(client, prefix, ref, rev)) == snap

        # A set missing a chunk at the entry's revision fails the same way for everyone.
        broken = await etcd_restore.stage(client, prefix, snap, now=1.0)
        await client.delete(etcd_restore.set_prefix(prefix, broken.name) + b"000001")
        rev2 = await client.put(prefix + b"log", b"entry 2")
        with pytest.raises(etcd_restore.RestoreChunksInvalid):
            await etcd_restore.fetch(client, prefix, broken, rev2)
        env2 = {"t": 1.0, "b": [{"i": "s", "x": 9.0, "c": list(cmd.encode(broken))}]}
        assert await etcd_restore.resolve(client, prefix, env2, rev2) == {}
        # An orphan (never applied here) is kept while young: its log entry may still commit.
        assert await etcd_restore.collect(client, prefix, rev2, {}) == []

        # Once compacted past the entry, the reader is told to load the snapshot instead.
        await client.compact(await client.put(prefix + b"log", b"entry 3"))
        with pytest.raises(EtcdCompacted):
            await etcd_restore.fetch(client, prefix, ref, rev)
    finally:
        await client.close()
