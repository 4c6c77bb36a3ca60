"""TTYs and stdin for containers and execs.

With ``-t``, runc runs in its foreground terminal mode: it makes the container's pty and copies between
it and its own stdio, which must itself be a terminal. So the engine gives runc the slave end of a pty
of its own and keeps the master: output read from the master goes to the logs and attach streams
unframed (a TTY has no stderr), input from ``attach``/``exec`` hijacks is written to it, and a resize
sets the master's window size and sends runc SIGWINCH, which copies the size into the container.
Without ``-t``, ``-i`` is a plain pipe to runc's stdin.

Input may arrive before the process exists (the CLI attaches, then starts): it waits in a queue.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import struct
import termios
from collections.abc import AsyncIterator, Callable

Input = asyncio.Queue  # of bytes, then None at the client's end of input


def open_console(rows: int = 24, cols: int = 80) -> tuple[int, int]:
    master, slave = os.openpty()
    set_size(master, rows, cols)
    os.set_inheritable(master, False)
    return master, slave


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def resize(master: int, runc_pid: int, rows: int, cols: int) -> None:
    """Resize a console made by ``open_console`` whose slave runc holds."""
    if master < 0 or rows <= 0 or cols <= 0:
        return
    try:
        set_size(master, rows, cols)
        os.kill(runc_pid, signal.SIGWINCH)
    except OSError:
        pass


async def _wait_fd(fd: int, writing: bool) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    (loop.add_writer if writing else loop.add_reader)(fd, wake)
    try:
        await ready
    finally:
        (loop.remove_writer if writing else loop.remove_reader)(fd)


async def read_fd(fd: int) -> AsyncIterator[bytes]:
    """Everything read from ``fd`` (a pty master) until EOF or EIO (the slave side closed)."""
    os.set_blocking(fd, False)
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            await _wait_fd(fd, writing=False)
            continue
        except OSError:  # EIO: nobody holds the slave any more
            return
        if not data:
            return
        yield data


async def write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            await _wait_fd(fd, writing=True)
            continue
        view = view[n:]


async def feed(queue: asyncio.Queue[bytes | None], write: Callable[[bytes], object],
               close: Callable[[], object]) -> None:
    """Copy queued input to the process until the client's input ends, then close its stdin."""
    while (chunk := await queue.get()) is not None:
        result = write(chunk)
        if asyncio.iscoroutine(result):
            await result
    close()


async def collect(reader: asyncio.StreamReader, queue: asyncio.Queue[bytes | None]) -> None:
    """A hijacked connection's input (stdin for the container), then None at its half-close."""
    try:
        while chunk := await reader.read(65536):
            queue.put_nowait(chunk)
    finally:
        queue.put_nowait(None)
