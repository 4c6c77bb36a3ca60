"""Protocol edges of the Serf RPC client that a real agent hits only by timing, made deterministic with a
scripted peer speaking the same msgpack framing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import msgpack

from beacon.gossip import SerfClient

Script = Callable[[dict, dict | None, Callable[..., None]], None]


async def scripted_agent(answer: Script) -> tuple[asyncio.Server, int]:
    """A peer that decodes requests (header, then the body the command carries) and lets `answer`
    write whatever frames it likes back."""
    no_body = {"members", "leave", "list-keys", "stats"}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        unpacker = msgpack.Unpacker(raw=False)
        header: dict | None = None

        def send(*objs: object) -> None:
            writer.write(b"".join(msgpack.packb(o, use_bin_type=True) for o in objs))

        while data := await reader.read(65536):
            unpacker.feed(data)
            for obj in unpacker:
                if header is None and obj["Command"] in no_body:
                    answer(obj, None, send)
                elif header is None:
                    header = obj
                else:
                    answer(header, obj, send)
                    header = None
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def with_client(answer: Script, body: Callable[[SerfClient], Awaitable[None]]) -> None:
    server, port = await scripted_agent(answer)
    try:
        client = await SerfClient.connect("127.0.0.1", port, None, timeout=3)
        try:
            await body(client)
        finally:
            await client.close()
    finally:
        server.close()


async def test_records_in_flight_after_a_stop_are_dropped_not_fatal() -> None:
    stopped: list[int] = []

    def answer(h: dict, b: dict | None, send: Callable[..., None]) -> None:
        seq = h["Seq"]
        if h["Command"] == "stream":
            send({"Seq": seq, "Error": ""}, {"Seq": seq, "Error": ""}, {"Event": "user", "Name": "a", "LTime": 1})
        elif h["Command"] == "stop":
            stopped.append(b["Stop"])
            send({"Seq": seq, "Error": ""})
        elif h["Command"] == "members":
            # Serf writes stream records from another goroutine than its answers: one for the stopped
            # stream can still arrive after the stop was answered (here: just before the next answer).
            for old in stopped:
                send({"Seq": old, "Error": ""}, {"Event": "user", "Name": "late", "LTime": 2})
            send({"Seq": seq, "Error": ""}, {"Members": [{"Name": "x"}]})
        else:
            send({"Seq": seq, "Error": ""})

    async def body(client: SerfClient) -> None:
        stream = await client.stream("user")
        assert (await stream.get(3))["Name"] == "a"
        await stream.stop()
        assert stopped
        assert await client.members() == [{"Name": "x"}]
        assert await client.members() == [{"Name": "x"}]
        assert not client.closed

    await with_client(answer, body)


async def test_a_query_answered_and_done_in_one_write_is_still_returned() -> None:
    def answer(h: dict, b: dict | None, send: Callable[..., None]) -> None:
        seq = h["Seq"]
        if h["Command"] == "query":
            send({"Seq": seq, "Error": ""},
                 {"Seq": seq, "Error": ""}, {"Type": "response", "From": "n2", "Payload": b"pong"},
                 {"Seq": seq, "Error": ""}, {"Type": "done", "From": "", "Payload": None})
        else:
            send({"Seq": seq, "Error": ""})

    async def body(client: SerfClient) -> None:
        stream = await client.query("ping")
        records = [r async for r in stream]
        assert [(r["Type"], r["From"]) for r in records] == [("response", "n2"), ("done", "")]

    await with_client(answer, body)


async def test_force_leave_with_or_without_a_body_keeps_the_connection_in_step() -> None:
    def answer(h: dict, b: dict | None, send: Callable[..., None]) -> None:
        seq = h["Seq"]
        if h["Command"] == "force-leave":
            if b["Node"] == "new-style":
                send({"Seq": seq, "Error": ""}, {"Exists": True})   # later Serf releases add a body
            else:
                send({"Seq": seq, "Error": ""})                     # Serf 0.8.2: none
        elif h["Command"] == "members":
            send({"Seq": seq, "Error": ""}, {"Members": []})
        else:
            send({"Seq": seq, "Error": ""})

    async def body(client: SerfClient) -> None:
        await client.force_leave("old-style")
        assert await client.members() == []
        await client.force_leave("new-style", prune=True)
        assert await client.members() == []

    await with_client(answer, body)
