"""Published-port relays: many concurrent TCP connections, half-close, UDP, clean close."""

from __future__ import annotations

import asyncio
import os
import socket
import sys

from .helpers import EngineProc, process_mode_port, until

ECHO = """
import asyncio, sys
port, host = int(sys.argv[1]), sys.argv[2]
async def echo(r, w):
    while data := await r.read(65536):
        w.write(data)
        await w.drain()
    w.close()
class Udp(asyncio.DatagramProtocol):
    def connection_made(self, t): self.t = t
    def datagram_received(self, d, a): self.t.sendto(b"udp:" + d, a)
async def main():
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Udp, local_addr=(host, port))
    server = await asyncio.start_server(echo, host, port, backlog=512)
    print("ready", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def start_echo(engine: EngineProc, name: str) -> tuple[int, int]:
    port, host = (process_mode_port(), "127.0.0.1") if engine.isolation == "process" else ("7", "0.0.0.0")
    engine.docker("run", "-d", "--name", name, "-p", f"127.0.0.1::{port}/tcp", "-p", f"127.0.0.1::{port}/udp",
                  "img", sys.executable, "-c", ECHO, port, host)
    until(lambda: "ready" in engine.docker("logs", name).stdout, what="echo server ready")
    ports = engine.inspect(name)["NetworkSettings"]["Ports"]
    return int(ports[f"{port}/tcp"][0]["HostPort"]), int(ports[f"{port}/udp"][0]["HostPort"])


async def roundtrip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    writer.write_eof()  # the half-close must reach the server through the relay
    data = await reader.read()
    writer.close()
    return data


async def test_many_concurrent_connections_and_half_close(engine: EngineProc) -> None:
    tcp, _ = await asyncio.to_thread(start_echo, engine, "echo")
    payloads = [os.urandom(1024) * (1 + i % 64) for i in range(200)]
    async with asyncio.timeout(60):
        results = await asyncio.gather(*(roundtrip(tcp, p) for p in payloads))
    assert results == payloads


async def test_udp_is_relayed_per_client(engine: EngineProc) -> None:
    _, udp = await asyncio.to_thread(start_echo, engine, "uecho")
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    try:
        for i, s in enumerate(socks):
            s.settimeout(5)
            s.bind(("127.0.0.1", 0))
            for n in range(5):
                msg = f"client{i}-{n}".encode()
                s.sendto(msg, ("127.0.0.1", udp))
                data, addr = s.recvfrom(2048)
                assert (data, addr) == (b"udp:" + msg, ("127.0.0.1", udp))
    finally:
        for s in socks:
            s.close()


async def test_relay_closes_when_the_container_stops(engine: EngineProc) -> None:
    tcp, _ = await asyncio.to_thread(start_echo, engine, "closing")
    async with asyncio.timeout(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        await asyncio.to_thread(engine.docker, "stop", "-t", "2", "closing")
        assert await reader.read() == b""  # the open connection ends
        writer.close()
        try:
            _, w2 = await asyncio.open_connection("127.0.0.1", tcp)
        except ConnectionRefusedError:
            pass
        else:
            w2.close()
            raise AssertionError("host port still accepts connections after the container stopped")
