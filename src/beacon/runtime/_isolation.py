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
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from beacon.runtime._bridge import Bridge
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
    channel: socket.socket | None = None  # unprivileged netns: asks the supervisor for sockets
    address: str = ""  # "10.213.0.2/16" when the container is plugged into the engine's bridge
    channel_lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = field(default=False)
    runc_id: str = ""  # runc backend: the container's runc ID and bundle directory
    bundle: str = ""
    console: int = -1  # -t: the master of the pty whose slave is runc's stdio

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
    init_mode: str = ""  # the supervisor's mode argument; defaults to ``name``
    needs_channel = False

    async def spawn(self, argv: list[str], env: dict[str, str], cwd: str, hostname: str,
                    stdout: int, stderr: int) -> Spawned:
        control, remote = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        rfd, wfd = control.detach(), remote.detach()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) if self.needs_channel else (None, None)
        fds = (wfd,) if theirs is None else (wfd, theirs.fileno())
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-S", INIT_SCRIPT, self.init_mode or self.name, hostname,
                ",".join(map(str, fds)), "--", *argv,
                stdin=asyncio.subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env, cwd=cwd or "/",
                pass_fds=fds, start_new_session=True)
        except BaseException:
            os.close(rfd)
            if ours is not None:
                ours.close()
            raise
        finally:
            os.close(wfd)
            if theirs is not None:
                theirs.close()
        loop = asyncio.get_running_loop()
        address = ""
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                line = await loop.run_in_executor(None, _read_line, rfd)
                if line.startswith(b"namespaces"):
                    address = await self._plug(proc.pid)
                    os.write(rfd, f"go {address}\n".encode())
                    line = await loop.run_in_executor(None, _read_line, rfd)
        except OSError as exc:
            line = b""
            log.warning("container setup failed: %s", exc)
        finally:
            os.close(rfd)
        if not line.startswith(b"ready "):
            self._unplug(address)
            if ours is not None:
                ours.close()
            code = await proc.wait()
            raise EngineError(f"container supervisor failed to start (exit status {code})")
        spawned = Spawned(proc=proc, ns_pid=int(line.split()[1]), channel=ours, address=address)
        self._attach(spawned)
        return spawned

    async def setup(self) -> str:
        """Once, before the first container: build what containers share; a warning, or ""."""
        return ""

    async def _plug(self, supervisor_pid: int) -> str:
        """Connect a new container's namespaces to the backend's network; its address, or ""."""
        return ""

    def _unplug(self, address: str) -> None:  # noqa: B027 (an optional hook, not abstract)
        """Give back what ``_plug`` took."""

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
        if spawned.channel is not None:
            spawned.channel.close()
        self._unplug(spawned.address)
        spawned.address = ""
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
        self.bridge: Bridge | None = None

    async def setup(self) -> str:
        bridge = Bridge(self._libc, self._host_fd, self._pool)
        try:
            await bridge.start()
        except OSError as exc:
            bridge.close()
            return f"WARNING: containers get no IP address (cannot build the private bridge: {exc})"
        self.bridge = bridge
        return ""

    async def _plug(self, supervisor_pid: int) -> str:
        if self.bridge is None:
            return ""
        try:
            return await self.bridge.plug(supervisor_pid)
        except OSError as exc:
            log.warning("container gets no IP address: %s", exc)
            return ""

    def _unplug(self, address: str) -> None:
        if self.bridge is not None and address:
            self.bridge.unplug(address)

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
        return await self.socket_in(spawned.netns_fd, family, type_)

    async def socket_in(self, netns_fd: int, family: int, type_: int) -> socket.socket:
        """A socket made inside the network namespace ``netns_fd`` (on the namespace helper thread)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._socket_in, netns_fd, family, type_)

    def close(self) -> None:
        if self.bridge is not None:
            self.bridge.close()
        self._pool.shutdown(wait=False)
        os.close(self._host_fd)


class UsernsNetnsIsolation(Isolation):
    """netns isolation without root: each container also gets a user namespace (root inside, the
    engine's uid outside). The engine may not setns() into it, so the container's supervisor hands
    it sockets over a unix socketpair with SCM_RIGHTS, and ``nsenter -U`` runs execs."""

    name = "netns"
    init_mode = "userns"
    needs_channel = True

    def exec_prefix(self, spawned: Spawned) -> list[str]:
        return ["nsenter", "-t", str(spawned.ns_pid), "-U", "-n", "-u", "-p", "--preserve-credentials", "--"]

    @staticmethod
    def _ask(spawned: Spawned, family: int, type_: int) -> socket.socket:
        chan = spawned.channel
        if chan is None or spawned.closed:
            raise ConnectionRefusedError("container is not running")
        with spawned.channel_lock:  # one request in flight per container keeps replies in order
            chan.send(f"{family} {type_}".encode())
            msg, fds, _, _ = socket.recv_fds(chan, 256, 1)
        if not fds:
            raise ConnectionRefusedError(msg.decode(errors="replace") or "container is not running")
        sock = socket.socket(fileno=fds[0])
        sock.setblocking(False)
        return sock

    async def open_socket(self, spawned: Spawned, family: int, type_: int) -> socket.socket:
        return await asyncio.get_running_loop().run_in_executor(None, self._ask, spawned, family, type_)


ISOLATIONS: dict[str, type[Isolation]] = {"process": ProcessIsolation, "netns": NetnsIsolation}


async def _probe(mode: str) -> str:
    """Empty string when the supervisor can build a container's namespaces in ``mode``, else why not."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-S", INIT_SCRIPT, mode, "probe", "2", "--", "true",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    return "" if proc.returncode == 0 else err.decode(errors="replace").strip() or "unshare failed"


async def choose(requested: str) -> tuple[Isolation, str]:
    """Resolve the requested mode to a backend; the string is a warning to show ("" if none).

    netns as root uses setns(2) from a helper thread; without root it uses user namespaces."""
    if requested not in ("auto", *ISOLATIONS):
        raise EngineError(f"unknown isolation {requested!r}: want auto, netns or process")
    if requested == "process":
        return ProcessIsolation(), ""
    if os.geteuid() == 0:
        reason = await _probe("probe")
        if not reason:
            netns = NetnsIsolation()
            return netns, await netns.setup()
    else:
        reason = await _probe("probe-userns")
        if not reason:
            return UsernsNetnsIsolation(), ""
    if requested == "netns":
        raise EngineError(f"netns isolation unavailable: {reason}")
    return ProcessIsolation(), (
        f"WARNING: netns isolation unavailable ({reason}); containers run as plain processes on the host network")
