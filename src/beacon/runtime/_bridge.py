"""Container IPs: a private bridge that lives in a network namespace the engine creates.

The bridge ``beacon0`` is not on the host: it sits in a "hub" namespace that exists only while the
engine holds a file descriptor to it. Each container gets a veth pair, one end on the bridge and
the other as ``eth0`` in the container (addressed by the container's supervisor before its command
starts). Containers reach each other on ``SUBNET``; the host and the outside world cannot reach the
subnet and the subnet cannot reach them, so the addresses collide with nothing. Published ports
keep working through the relays, which never use these addresses.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import ipaddress
import itertools
import os
import socket
import struct
from concurrent.futures import ThreadPoolExecutor

SUBNET = ipaddress.ip_network("10.213.0.0/16")
GATEWAY = "10.213.0.1"  # the bridge's own address in the hub: where the agent relay listens
BRIDGE = "beacon0"
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
SIOCSIFADDR, SIOCSIFNETMASK, SIOCADDRT = 0x8916, 0x891C, 0x890B
RTF_UP, RTF_GATEWAY = 0x1, 0x2


def _sockaddr(addr4: bytes) -> bytes:
    return struct.pack("=H2s4s8x", socket.AF_INET, b"\0\0", addr4)


def loopback_up() -> None:
    """Bring ``lo`` up in the calling thread's network namespace (ioctl: no process needed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        res = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0))
        flags = struct.unpack("16sH", res[:18])[1] | IFF_UP
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags))


class Bridge:
    def __init__(self, libc: ctypes.CDLL, host_fd: int, pool: ThreadPoolExecutor) -> None:
        self._libc, self._host_fd, self._pool = libc, host_fd, pool
        self.hub_fd = -1
        self._hosts = (h for h in SUBNET.hosts() if str(h) != GATEWAY)
        self._veths = itertools.count(1)
        self._free: list[str] = []
        self._used: set[str] = set()

    def _new_netns(self) -> int:
        """In the helper thread: make a fresh network namespace, keep an fd to it, switch back."""
        if self._libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare: {os.strerror(err)}")
        try:
            return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            if self._libc.setns(self._host_fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the host namespace failed")

    async def _ip(self, commands: list[str], netns_fd: int = -1) -> None:
        fd = self.hub_fd if netns_fd < 0 else netns_fd
        proc = await asyncio.create_subprocess_exec(
            "nsenter", f"--net=/proc/self/fd/{fd}", "ip", "-batch", "-",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            pass_fds=(fd,))
        _, err = await proc.communicate(("\n".join(commands) + "\n").encode())
        if proc.returncode != 0:
            raise OSError(f"ip: {err.decode(errors='replace').strip()}")

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.hub_fd = await loop.run_in_executor(self._pool, self._new_netns)
        await self._ip(["link set lo up", f"link add {BRIDGE} type bridge",
                        f"addr add {GATEWAY}/{SUBNET.prefixlen} dev {BRIDGE}", f"link set {BRIDGE} up"])

    def _allocate(self) -> str:
        if self._free:
            return self._free.pop()
        for host in self._hosts:
            return str(host)
        raise OSError(f"no free address left in {SUBNET}")

    async def plug(self, supervisor_pid: int) -> str:
        """Put ``eth0`` into the namespace of ``supervisor_pid``; returns the address it should get."""
        address = self._allocate()
        veth = f"vb{supervisor_pid}"
        try:
            await self._ip([f"link add {veth} type veth peer name eth0 netns {supervisor_pid}",
                            f"link set {veth} master {BRIDGE}", f"link set {veth} up"])
        except OSError:
            self._free.append(address)
            raise
        self._used.add(address)
        return f"{address}/{SUBNET.prefixlen}"

    async def plug_fd(self, netns_fd: int) -> str:
        """Give the network namespace ``netns_fd`` an ``eth0`` on the bridge, addressed, with a default
        route to the gateway; returns its address as ``A.B.C.D/16``."""
        address = self._allocate()
        veth = f"vb{next(self._veths)}"
        cidr = f"{address}/{SUBNET.prefixlen}"
        try:
            await self._ip([f"link add {veth} type veth peer name eth0 netns /proc/{os.getpid()}/fd/{netns_fd}",
                            f"link set {veth} master {BRIDGE}", f"link set {veth} up"])
            # In the container's namespace: by ioctl from the helper thread (no second ip process).
            await asyncio.get_running_loop().run_in_executor(self._pool, self._configure, netns_fd, address)
        except OSError:
            self._free.append(address)
            raise
        self._used.add(address)
        return cidr

    def _configure(self, netns_fd: int, address: str) -> None:
        """In the helper thread: enter ``netns_fd``, address ``eth0``, bring it up, add the default
        route via the gateway, and come back."""
        if self._libc.setns(netns_fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns: {os.strerror(err)}")
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                mask = socket.inet_aton(str(SUBNET.netmask))
                for request, value in ((SIOCSIFADDR, socket.inet_aton(address)), (SIOCSIFNETMASK, mask)):
                    fcntl.ioctl(s.fileno(), request, struct.pack("16s16s8x", b"eth0", _sockaddr(value)))
                res = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, struct.pack("16sH22x", b"eth0", 0))
                flags = struct.unpack("16sH", res[:18])[1] | IFF_UP
                fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH22x", b"eth0", flags))
                zero = _sockaddr(b"\0\0\0\0")
                # struct rtentry (x86_64/aarch64 LP64 layout): dst, gateway, genmask, flags ...
                route = struct.pack("=Q16s16s16sHh4xQQh6xQQQH6x", 0, zero, _sockaddr(socket.inet_aton(GATEWAY)),
                                    zero, RTF_UP | RTF_GATEWAY, 0, 0, 0, 0, 0, 0, 0, 0)
                fcntl.ioctl(s.fileno(), SIOCADDRT, route)
        finally:
            if self._libc.setns(self._host_fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the host namespace failed")

    def unplug(self, cidr: str) -> None:
        """The container's namespace is gone (and with it both veth ends): reuse its address."""
        address = cidr.partition("/")[0]
        if address in self._used:
            self._used.discard(address)
            self._free.append(address)

    def close(self) -> None:
        if self.hub_fd >= 0:
            os.close(self.hub_fd)  # the hub namespace and its bridge go away with the last reference
            self.hub_fd = -1
