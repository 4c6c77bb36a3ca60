"""Clients that try to take an agent down through its HTTP listener: too many connections from one
address, headers that never finish, absurdly nested bodies. Each case first shows the listener serving,
then the attack, then that other clients are still served and writes still commit."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import resource
import socket
import time

import pytest

pytestmark = pytest.mark.integration

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def write_config(tmp_path, doc: dict) -> str:
    path = tmp_path / "limits.json"
    path.write_text(json.dumps(doc))
    return str(path)


def raw_request(host: str, port: int, data: bytes, source: str = "127.0.0.1", timeout: float = 5.0) -> bytes:
    with socket.create_connection((host, port), timeout=timeout, source_address=(source, 0)) as s:
        s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def get(host: str, port: int, path: str, source: str = "127.0.0.1") -> bytes:
    return raw_request(host, port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(), source)


def test_connections_over_the_per_client_limit_get_429_and_other_clients_are_served(start_agent, tmp_path) -> None:
    agent = start_agent("-config-file", write_config(tmp_path, {"limits": {"http_max_conns_per_client": 5}}))
    held = [socket.create_connection(("127.0.0.1", agent.http_port), source_address=("127.0.0.2", 0))
            for _ in range(5)]
    try:
        # The five are admitted: each answers a request and stays open (keep-alive).
        for s in held:
            s.sendall(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
        over = get("127.0.0.1", agent.http_port, "/v1/status/leader", source="127.0.0.2")
        assert over.startswith(b"HTTP/1.1 429"), over
        assert b"too many concurrent connections" in over
        # Another address is not affected.
        assert get("127.0.0.1", agent.http_port, "/v1/status/leader", source="127.0.0.3").startswith(b"HTTP/1.1 200")
        # Closing one frees its slot.
        held.pop().close()
        deadline = time.monotonic() + 10
        while True:
            reply = get("127.0.0.1", agent.http_port, "/v1/status/leader", source="127.0.0.2")
            if reply.startswith(b"HTTP/1.1 200") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert reply.startswith(b"HTTP/1.1 200"), reply
        # The refused connections' request bytes were discarded, not parsed (nor did they raise).
        assert not [line for line in agent.lines if "Traceback" in line or "Fatal error" in line], agent.lines[-20:]
    finally:
        for s in held:
            s.close()


def _raise_nofile(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))  # root may raise the hard limit
            return want
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    return max(soft, want)


async def _flood(port: int, count: int, source: str) -> list[socket.socket]:
    """Open `count` connections from `source` and hold them."""
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []
    sem = asyncio.Semaphore(256)

    async def one() -> None:
        async with sem:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            # Pick the port at connect time: binding port 0 first searches the range per socket.
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((source, 0))
            try:
                await loop.sock_connect(s, ("127.0.0.1", port))
            except OSError:
                s.close()
                return
            socks.append(s)

    await asyncio.gather(*(one() for _ in range(count)))
    return socks


def _held(socks: list[socket.socket]) -> int:
    """How many connections the agent still holds open without having answered or closed them."""
    held = 0
    for s in socks:
        try:
            if s.recv(64, socket.MSG_PEEK) == b"":
                continue  # closed by the agent
        except BlockingIOError:
            held += 1  # open and silent
        except OSError:
            continue  # reset by the agent
    return held


def _flood_worker(port: int, count: int, source: str, conn) -> None:  # runs in a child process
    _raise_nofile(count + 500)
    socks = asyncio.run(_flood(port, count, source))
    conn.send(len(socks))
    conn.recv()  # everyone has opened theirs: look at what the agent did with them
    conn.send((_held(socks), sum(1 for s in socks if _got_429(s))))
    conn.recv()
    for s in socks:
        s.close()


def test_twenty_thousand_idle_connections_from_one_client_do_not_starve_the_agent(start_agent, tmp_path) -> None:
    agent = start_agent("-data-dir", str(tmp_path / "data"))
    assert agent.request("PUT", "/v1/kv/before", b"1")[0] == 200
    # Two processes from one source address: a single process here may not hold 20,000 descriptors.
    # forkserver, not fork: earlier tests in this process may have started gRPC's threads, and a fork
    # taken while another thread holds a lock can leave the child stuck forever.
    ctx = multiprocessing.get_context("forkserver")
    workers = []
    for _ in range(2):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_flood_worker, args=(agent.http_port, 10_000, "127.0.0.4", child), daemon=True)
        proc.start()
        workers.append((proc, parent))
    try:
        opened = sum(conn.recv() for _, conn in workers)
        assert opened >= 19_000, opened
        for _, conn in workers:
            conn.send("measure")
        counts = [conn.recv() for _, conn in workers]
        held = sum(c[0] for c in counts)
        refused = sum(c[1] for c in counts)
        # The agent holds at most Consul's per-client allowance; the rest got 429 and a close.
        assert held <= 200, held
        assert refused >= opened - 2_000, (refused, opened)
        # Everyone else is still served, and writes still become durable.
        status, _, body = agent.request("PUT", "/v1/kv/after", b"2")
        assert status == 200 and body.strip() == b"true", (status, body)
        status, _, body = agent.request("GET", "/v1/kv/after?raw")
        assert (status, body) == (200, b"2")
        assert agent.proc.poll() is None
    finally:
        for proc, conn in workers:
            try:
                conn.send("close")
            except OSError:
                pass
            proc.join(30)
            if proc.is_alive():
                proc.kill()


def _got_429(s: socket.socket) -> bool:
    try:
        return s.recv(64).startswith(b"HTTP/1.1 429")
    except OSError:
        return False


def test_a_slow_header_client_is_disconnected(start_agent, tmp_path) -> None:
    agent = start_agent("-config-file", write_config(tmp_path, {"http_config": {"read_header_timeout": "1s"}}))
    s = socket.create_connection(("127.0.0.1", agent.http_port), timeout=10)
    try:
        s.sendall(b"GET /v1/status/leader HTTP/1.1\r\n")
        started = time.monotonic()
        closed_after = None
        for i in range(40):  # one header line every 0.25 s: never finishes on its own
            try:
                s.sendall(f"X-Slow-{i}: y\r\n".encode())
            except OSError:
                closed_after = time.monotonic() - started
                break
            s.settimeout(0.25)
            try:
                if s.recv(1024) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                pass
            except OSError:
                closed_after = time.monotonic() - started
                break
        assert closed_after is not None, "a client trickling headers for 10 s was never disconnected"
        assert closed_after >= 0.5  # the deadline was not hit at once: the connection was accepted first
    finally:
        s.close()
    # A prompt client on the same listener is served as usual.
    assert get("127.0.0.1", agent.http_port, "/v1/status/leader").startswith(b"HTTP/1.1 200")


def test_deeply_nested_json_is_a_400_and_the_listener_lives(start_agent) -> None:
    agent = start_agent()
    for depth in (100, 100_000):
        body = '{"Name": "x", "Meta": ' + "[" * depth + "]" * depth + "}"
        status, _, data = agent.request("PUT", "/v1/agent/service/register", body)
        assert status == 400, (depth, status, data[:200])
        assert b"nested deeper" in data or b"decode" in data.lower()
        txn = "[" + "[" * depth + "]" * depth + "]"
        status, _, data = agent.request("PUT", "/v1/txn", txn)
        assert status == 400, (depth, status, data[:200])
    status, _, _ = agent.request("PUT", "/v1/agent/service/register", {"Name": "fine", "Port": 1})
    assert status == 200
    assert "fine" in agent.json("GET", "/v1/agent/services")  # type: ignore[operator]
