"""The Serf RPC client's guards and the supervisor's restarts, on real serf processes."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time

import pytest

from beacon.gossip import (
    MemberEvent,
    SerfAgent,
    SerfAuthError,
    SerfClient,
    SerfConfig,
    SerfError,
    SerfNotFound,
    SerfProtocolError,
    find_serf,
)
from beacon.gossip.supervisor import free_port
from tests.gossip.conftest import Pool, needs_serf, new_key, next_addr, wait_for

pytestmark = needs_serf


async def test_rpc_with_a_wrong_auth_key_is_refused(pool: Pool) -> None:
    m = await pool.add()
    host, port = m.serf.rpc_addr
    assert host == "127.0.0.1"  # RPC never leaves loopback
    with pytest.raises(SerfAuthError, match="Invalid authentication token"):
        await SerfClient.connect(host, port, "not-the-key")
    anonymous = await SerfClient.connect(host, port, None)
    try:
        with pytest.raises(SerfAuthError, match="Authentication required"):
            await anonymous.members()
    finally:
        await anonymous.close()
    good = await m.serf.connect()  # the same agent answers the right key: the refusal was the key
    try:
        assert [x["Name"] for x in await good.members()] == ["n1"]
    finally:
        await good.close()
    # The key is in a private file, not on the command line.
    with open(f"/proc/{m.serf.pid}/cmdline", "rb") as f:
        assert m.serf.auth_key.encode() not in f.read()
    assert os.stat(m.serf.config_path).st_mode & 0o077 == 0


async def _garbage_server(payload: bytes) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)          # the handshake request
        writer.write(payload)
        await writer.drain()
        await asyncio.sleep(30)         # then hold the connection open: the client must not wait on it
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("payload", [
    b"\xc1" * 16,                                   # a byte msgpack never uses
    b"HTTP/1.1 400 Bad Request\r\n\r\n",            # a different protocol on that port
    b"\x92\x01\x02",                                # valid msgpack, but not a response header
    bytes(random.Random(7).getrandbits(8) for _ in range(4096)),
    b"\xdb\xff\xff\xff\xff",                        # a 4 GiB string header that never completes
], ids=["reserved-byte", "http", "wrong-shape", "random", "huge-length"])
async def test_garbage_from_the_rpc_peer_fails_fast_with_a_clear_error(payload: bytes) -> None:
    server, port = await _garbage_server(payload)
    try:
        t0 = time.monotonic()
        with pytest.raises(SerfError) as info:
            await SerfClient.connect("127.0.0.1", port, "key", timeout=3.0)
        elapsed = time.monotonic() - t0
    finally:
        server.close()
    assert elapsed < 10, elapsed
    assert "serf" in str(info.value)
    if payload[:1] in (b"\xc1", b"H", b"\x92"):
        assert isinstance(info.value, SerfProtocolError), info.value   # decided at once, not by timeout
        assert elapsed < 2.5, elapsed


async def test_supervisor_restarts_a_killed_serf_and_it_rejoins_from_its_snapshot(pool: Pool) -> None:
    for _ in range(3):
        await pool.add()
    await pool.converge()
    victim = pool.members[2]
    victim.serf.restart = True

    # Serf buffers its snapshot and flushes it on a write at least 500 ms after the last flush; a user
    # event is such a write (a long-running agent has had many), so fire some until it shows.
    async def snapshot_lists_peers() -> bool:
        with open(victim.serf.snapshot_path) as f:
            text = f.read()
        if "alive: n1 " in text and "alive: n2 " in text:
            return True
        await pool.members[0].fire("flush", b"")
        return False

    await wait_for(snapshot_lists_peers, 30, interval=0.6, what="the snapshot records the other members")
    sub = victim.subscribe()
    old_pid = victim.serf.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)

    async def restarted() -> bool:
        return victim.serf.restarts >= 1 and victim.serf.pid not in (None, old_pid)

    await wait_for(restarted, 30, what="serf restarted by the supervisor")
    # No join was issued after the restart: the snapshot brought the members back. The facade's event
    # stream reconnected too, and events flow again.
    await pool.converge(60)
    await wait_for(lambda: asyncio.sleep(0, victim.reconnects >= 1), 30, what="event stream reconnected")
    with open(victim.serf.log_path) as f:
        assert "Re-joined to previously known node" in f.read()
    await pool.members[0].fire("after-restart", b"")
    while True:
        ev = await sub.get(30)
        if getattr(ev, "name", "") == "after-restart":
            break


async def test_without_a_serf_binary_the_error_names_the_debian_package(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SerfNotFound) as info:
        find_serf()
    msg = str(info.value)
    assert "\n" not in msg and "`serf`" in msg and "apt-get install serf" in msg
    with pytest.raises(SerfNotFound, match="not an executable"):
        SerfAgent(SerfConfig(node_name="x", data_dir=str(tmp_path), serf_bin=str(tmp_path / "nope")))


async def test_a_bad_gossip_key_or_busy_port_fails_start_with_the_reason(tmp_path) -> None:
    with pytest.raises(ValueError, match="16, 24 or 32 bytes"):
        SerfAgent(SerfConfig(node_name="x", data_dir=str(tmp_path), encrypt="c2hvcnQ="))
    # Gossip on a non-loopback address must be authenticated (the keyring), as all cluster traffic.
    for bind, advertise in (("0.0.0.0", ""), ("127.0.0.1", "192.0.2.7")):
        with pytest.raises(ValueError, match="without an encryption key"):
            SerfAgent(SerfConfig(node_name="x", data_dir=str(tmp_path), bind_addr=bind, advertise_addr=advertise))
    SerfAgent(SerfConfig(node_name="x", data_dir=str(tmp_path), bind_addr="0.0.0.0", encrypt=new_key()))
    addr = next_addr()
    port = free_port(addr, udp=True)
    first = SerfAgent(SerfConfig(node_name="a", data_dir=str(tmp_path / "a"), bind_addr=addr, port=port),
                      restart=False)
    await first.start()
    try:
        second = SerfAgent(SerfConfig(node_name="b", data_dir=str(tmp_path / "b"), bind_addr=addr, port=port),
                           restart=False)
        with pytest.raises(Exception, match="did not start.*(address already in use|bind)"):
            await second.start(timeout=15)
    finally:
        await first.stop()


async def test_a_restarted_serf_with_no_peers_in_its_snapshot_is_rejoined_by_the_facade(pool: Pool) -> None:
    for _ in range(2):
        await pool.add()
    victim = await pool.add(join=False)
    sub = victim.subscribe()
    await victim.join([f"{pool.members[0].serf.config.bind_addr}:{pool.members[0].serf.config.port}"])
    await pool.converge()
    seen: set[str] = set()
    while seen != {"n1", "n2"}:  # Serf coalesces member events for up to a few seconds
        ev = await sub.get(30)
        if isinstance(ev, MemberEvent) and ev.type == "member-join":
            seen |= {m.name for m in ev.members} - {"n3"}
    victim.serf.restart = True  # the supervisor waits 0.5 s before restarting: time to empty the snapshot
    old_pid = victim.serf.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    with open(victim.serf.snapshot_path, "w") as f:
        f.write("")  # as if Serf had not flushed it yet (it buffers; see the test above)
    await wait_for(lambda: asyncio.sleep(0, victim.serf.restarts >= 1), 30, what="serf restarted")
    t0 = time.monotonic()
    await pool.converge(60)
    # Without the facade's rejoin this takes a push-pull round of the others (30 s on the lan profile).
    assert time.monotonic() - t0 < 20
    with open(victim.serf.log_path) as f:
        log_text = f.read()
    restarted = log_text.split("Serf agent starting")[-1]
    assert "Re-joined to previously known node" not in restarted and "agent: joining:" in restarted


async def test_rpc_filters_monitor_stats_and_stream_stop(pool: Pool) -> None:
    await pool.add(tags={"role": "consul", "dc": "dc1"})
    await pool.add(tags={"role": "node", "dc": "dc1"})
    await pool.converge()
    client = await pool.members[0].serf.connect()
    try:
        assert [m["Name"] for m in await client.members_filtered(tags={"role": "consul"})] == ["n1"]
        assert [m["Name"] for m in await client.members_filtered(tags={"role": "no.*"}, status="alive")] == ["n2"]
        assert await client.members_filtered(status="failed") == []
        stats = await client.stats()
        assert stats["agent"]["name"] == "n1" and stats["serf"]["members"] == "2" and stats["serf"]["encrypted"] == "true"
        monitor = await client.monitor("info")
        first = await monitor.get(10)  # the agent replays its recent log lines to a new monitor
        assert first is not None and "[INFO]" in first["Log"]
        await monitor.stop()
        stream = await client.stream("user")
        await stream.stop()
        assert await stream.get(5) is None  # ended, not hanging
        # The connection is still good after both were stopped.
        assert len(await client.members()) == 2
    finally:
        await client.close()
