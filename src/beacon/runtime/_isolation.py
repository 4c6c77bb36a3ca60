"""How a container's process is isolated: one backend per mode, chosen by name at engine start.

``ISOLATIONS`` maps a mode name to its class; ``choose()`` resolves ``auto`` by probing the kernel.
"""

from __future__ import annotations

import abc
import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from beacon.runtime._errors import EngineError

log = logging.getLogger(__name__)
INIT_SCRIPT = str(Path(__file__).with_name("_init.py"))
CLONE_NEWNET = 0x40000000
READY_TIMEOUT = 10.0


@dataclass
class Spawned:
    """A running container process. ``proc`` is the supervisor; ``ns_pid`` the pid nsenter joins."""

    proc: asyncio.subprocess.Process
    ns_pid: int
    netns_fd: int = -1
    closed: bool = field(default=False)

    @property
    def pid(self) -> int:
        return self.proc.pid


class Isolation(abc.ABC):
    """A way to run a container's command.

    Timing guarantees every backend gives:

    * ``spawn`` returns once the command has been forked inside its isolation (its namespaces exist,
      loopback is up), normally within tens of milliseconds; it does not wait for the command to be
      ready to serve. Exec failures after that surface as exit code 127.
    * ``open_socket`` returns a socket that lives in the container's network; it never blocks on the
      container (no process is started per call).
    * ``signal`` reaches every process of the container that kept the supervisor's process group.
    """

    name: str = ""

    async def spawn(self, argv: list[str], env: dict[str, str], cwd: str, hostname: str,
                    stdout: int, stderr: int) -> Spawned:
        rfd, wfd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-S", INIT_SCRIPT, self.name, hostname, str(wfd), "--", *argv,
                stdin=asyncio.subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env, cwd=cwd or "/",
                pass_fds=(wfd,), start_new_session=True)
        except BaseException:
            os.close(rfd)
            raise
        finally:
            os.close(wfd)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                line = await loop.run_in_executor(None, _read_line, rfd)
        finally:
            os.close(rfd)
        if not line.startswith(b"ready "):
            code = await proc.wait()
            raise EngineError(f"container supervisor failed to start (exit status {code})")
        spawned = Spawned(proc=proc, ns_pid=int(line.split()[1]))
        self._attach(spawned)
        return spawned

    def _attach(self, spawned: Spawned) -> None:  # noqa: B027 (an optional hook, not abstract)
        """Hook for backends that keep a handle on the container's namespaces."""

    def signal(self, spawned: Spawned, sig: int) -> None:
        try:
            os.killpg(spawned.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def release(self, spawned: Spawned) -> None:
        """After the supervisor exited: kill stragglers left in its process group, drop handles."""
        self.signal(spawned, signal.SIGKILL)
        if spawned.netns_fd >= 0:
            os.close(spawned.netns_fd)
            spawned.netns_fd = -1
        spawned.closed = True

    @abc.abstractmethod
    def exec_prefix(self, spawned: Spawned) -> list[str]:
        """argv prefix that runs a command inside the container (``docker exec``, health probes)."""

    @abc.abstractmethod
    async def open_socket(self, spawned: Spawned, family: int, type_: int) -> socket.socket:
        """A non-blocking socket in the container's network namespace."""

    def close(self) -> None:  # noqa: B027 (an optional hook, not abstract)
        """Release what the backend holds for the engine's lifetime."""


def _read_line(fd: int) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 64)
        if not chunk:
            break
        data += chunk
    return data


class ProcessIsolation(Isolation):
    """Plain supervised process groups on the host network."""

    name = "process"

    def exec_prefix(self, spawned: Spawned) -> list[str]:
        return []

    async def open_socket(self, spawned: Spawned, family: int, type_: int) -> socket.socket:
        sock = socket.socket(family, type_)
        sock.setblocking(False)
        return sock


class NetnsIsolation(Isolation):
    """Own network, UTS and PID namespaces per container (needs CAP_SYS_ADMIN).

    Sockets are created inside a container's network namespace by one helper thread that switches
    namespace with setns(2) around ``socket()`` and switches straight back: a socket stays in the
    namespace it was created in, so the event loop can then connect and use it from the host.
    """

    name = "netns"

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._host_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="beacon-netns")

    def _attach(self, spawned: Spawned) -> None:
        spawned.netns_fd = os.open(f"/proc/{spawned.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    def exec_prefix(self, spawned: Spawned) -> list[str]:
        return ["nsenter", "-t", str(spawned.ns_pid), "-n", "-u", "-p", "--"]

    def _socket_in(self, netns_fd: int, family: int, type_: int) -> socket.socket:
        if self._libc.setns(netns_fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns: {os.strerror(err)}")
        try:
            sock = socket.socket(family, type_)
        finally:
            if self._libc.setns(self._host_fd, CLONE_NEWNET) != 0:
                # This thread is stuck in the container's namespace: never reuse it.
                log.error("setns back to the host namespace failed; replacing the helper thread")
                self._pool.shutdown(wait=False)
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="beacon-netns")
        sock.setblocking(False)
        return sock

    async def open_socket(self, spawned: Spawned, family: int, type_: int) -> socket.socket:
        if spawned.netns_fd < 0:
            raise ConnectionRefusedError("container is not running")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._socket_in, spawned.netns_fd, family, type_)

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        os.close(self._host_fd)


ISOLATIONS: dict[str, type[Isolation]] = {"process": ProcessIsolation, "netns": NetnsIsolation}


async def _probe_netns() -> str:
    """Empty string when this process may create namespaces, else the reason it may not."""
    if os.geteuid() != 0:
        return "not root (unprivileged user-namespace mode is not implemented)"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-S", INIT_SCRIPT, "probe", "probe", "2", "--", "true",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    return "" if proc.returncode == 0 else err.decode(errors="replace").strip() or "unshare failed"


async def choose(requested: str) -> tuple[Isolation, str]:
    """Resolve the requested mode to a backend; the string is a warning to show ("" if none)."""
    if requested not in ("auto", *ISOLATIONS):
        raise EngineError(f"unknown isolation {requested!r}: want auto, netns or process")
    if requested == "process":
        return ProcessIsolation(), ""
    reason = await _probe_netns()
    if not reason:
        return NetnsIsolation(), ""
    if requested == "netns":
        raise EngineError(f"netns isolation unavailable: {reason}")
    return ProcessIsolation(), (
        f"WARNING: netns isolation unavailable ({reason}); containers run as plain processes on the host network")
