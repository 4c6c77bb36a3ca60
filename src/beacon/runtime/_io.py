"""What runs beside a container's process: its output into the log store, stdin from attach, and
health probes. Plain coroutines, started and cancelled by the engine's supervisor."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from beacon.runtime import _stdio
from beacon.runtime._logs import LogStore, rfc3339

if TYPE_CHECKING:
    from beacon.runtime._engine import Engine
    from beacon.runtime._isolation import Spawned
    from beacon.runtime._model import Container

HEALTH_OUTPUT_CAP = 4096


async def pump(logs: LogStore, stream: asyncio.StreamReader | None, sid: int) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        logs.feed(sid, chunk)
    logs.flush(sid)


async def pump_console(logs: LogStore, master: int) -> None:
    """A TTY's output, passed on as it comes (prompts have no newline)."""
    async for chunk in _stdio.read_fd(master):
        logs.feed_raw(1, chunk)


def feed_stdin(queue: asyncio.Queue[bytes | None] | None, spawned: Spawned,
               stdin_once: bool) -> asyncio.Task[None] | None:
    """Copy attach input to the container: to its pty with -t, else to runc's stdin pipe (closed when
    the client's input ends and the container was created with StdinOnce, as `run -i` does)."""
    if queue is None:
        return None
    if spawned.console >= 0:
        master = spawned.console
        return asyncio.create_task(_stdio.feed(queue, lambda b: _stdio.write_fd(master, b), lambda: None))
    writer = spawned.proc.stdin
    if writer is None:
        return None

    async def write(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    def close() -> None:
        if stdin_once:
            writer.close()

    return asyncio.create_task(_stdio.feed(queue, write, close))


async def health_loop(engine: Engine, c: Container, spawned: Spawned) -> None:
    assert c.health is not None
    spec, argv = c.health, c.health.argv() or []
    started = time.monotonic()
    while True:
        await asyncio.sleep(spec.interval_ns / 1e9)
        start = rfc3339(time.time_ns())
        code, output = await engine.exec.run_captured(c, spawned, argv, spec.timeout_ns / 1e9, HEALTH_OUTPUT_CAP)
        st = c.state
        st.health_log = [*st.health_log, {"Start": start, "End": rfc3339(time.time_ns()), "ExitCode": code,
                                          "Output": output}][-5:]
        old = st.health_status
        if code == 0:
            st.failing_streak, new = 0, "healthy"
        elif time.monotonic() - started < spec.start_period_ns / 1e9:
            new = old  # failures during the start period do not count
        else:
            st.failing_streak += 1
            new = "unhealthy" if st.failing_streak >= spec.retries else old
        st.health_status = new
        engine.save_container(c)
        if new != old:
            engine.events.emit("container", f"health_status: {new}", c.id, c.label_attributes(), from_=c.image)
