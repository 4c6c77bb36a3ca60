"""The per-container supervisor: a tiny init, run as ``python3 -S _init.py MODE HOSTNAME READY_FD -- CMD...``.

It imports nothing from beacon (it runs with ``-S`` for a fast start) and is the only process the
engine spawns per container. The process tree it builds::

    netns:    supervisor (host)  -> init (pid 1 in new net/uts/pid namespaces) -> command (pid 2)
    process:  supervisor (subreaper, host network)                               -> command

Why an init at all: a command that is pid 1 ignores SIGTERM unless it installs a handler, and nothing
would reap its orphans. Everything stays in the supervisor's process group, so the engine signals the
whole container with one ``killpg``; the supervisor and init swallow the signals they receive and
live on to report the command's exit status (``128 + signal`` when it was killed, as Docker reports).

READY_FD is a pipe to the engine: one line ``ready <pid>\\n`` once the namespaces exist, where ``pid`` is
the host pid of the process whose namespaces ``nsenter`` should join (the init in netns mode).
"""

# The C modules behind signal and socket: their Python wrappers import enum, which costs about
# 10 ms of every container start.
import _signal as signal
import _socket as socket
import array
import ctypes
import fcntl
import os
import select
import struct
import sys
import time

CLONE_NEWUSER = 0x10000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
IFF_UP = 0x1
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _loopback_up() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        res = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0))
        flags = struct.unpack("16sH", res[:18])[1] | IFF_UP
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags))
    finally:
        s.close()


def _swallow(signum, frame):  # the signal went to the whole group; the command handles it
    pass


def _exit_status(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _fork_forwarding() -> int:
    """fork() with the forwarded signals blocked; a signal that reached us before the child existed
    (the group was signalled a moment too early) is passed on to it, so it is never lost. The child
    starts with those signals still blocked and must unblock them itself."""
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    child = os.fork()
    if child == 0:
        return 0
    for sig in signal.sigpending() & set(FORWARDED):
        try:
            os.kill(child, sig)
        except OSError:
            pass
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    return child


def _exec_command(cmd: list) -> None:
    """In the forked child: restore default signal handling and exec, or exit 127/126 like a shell."""
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    try:
        os.execvp(cmd[0], cmd)
    except OSError as exc:
        os.write(2, f"beacon-init: exec {cmd[0]!r}: {exc.strerror}\n".encode())
        os._exit(126 if exc.errno == 13 else 127)


def _run_init(cmd: list) -> int:
    """Fork the command, reap everything, return the command's exit status."""
    child = _fork_forwarding()
    if child == 0:
        _exec_command(cmd)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 125
        if pid == child:
            # The rest of the container dies with it: the kernel kills a pid namespace whose pid 1
            # exits, and in process mode the engine kills the supervisor's process group.
            return _exit_status(status)


def _leftovers() -> list:
    """Processes of this container still alive: in our process group, or orphans we adopted."""
    me, found = os.getpid(), []
    group = me if os.getpgid(0) == me else -1  # only a group we lead is the container's
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != b"Z" and (int(fields[1]) == me or int(fields[2]) == group):
            found.append(int(entry))
    return found


def _reap_all() -> None:
    """Process mode: kill what the command left behind and reap it, as a container stop would."""
    for _ in range(50):
        victims = _leftovers()
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                break
        if not victims:
            return
        time.sleep(0.02)


def _set_address(ifname: bytes, cidr: str) -> None:
    """Give ``ifname`` an IPv4 address and bring it up (ioctls: no iproute2 needed in here)."""
    addr, _, prefix = cidr.partition("/")
    mask = (0xFFFFFFFF << (32 - int(prefix or 32))) & 0xFFFFFFFF
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for request, value in ((SIOCSIFADDR, socket.inet_aton(addr)), (SIOCSIFNETMASK, struct.pack(">I", mask))):
            sockaddr = struct.pack("=H2s4s8x", socket.AF_INET, b"\0\0", value)
            fcntl.ioctl(s.fileno(), request, struct.pack("16s16s8x", ifname, sockaddr))
        res = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, struct.pack("16sH22x", ifname, 0))
        flags = struct.unpack("16sH", res[:18])[1] | IFF_UP
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH22x", ifname, flags))
    finally:
        s.close()


def _sync(fd: int) -> None:
    """Tell the engine the namespaces exist, then wait for ``go`` (after it has plugged an ``eth0``
    into our network namespace, ``go ADDR/PREFIX`` says which address to give it)."""
    os.write(fd, b"namespaces\n")
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(fd, 64)
        if not chunk:
            raise OSError(32, "engine went away before go")
        line += chunk
    words = line.split()
    if len(words) > 1:
        _set_address(b"eth0", words[1].decode())


def _ready(fd: int, pid: int) -> None:
    try:
        os.write(fd, f"ready {pid}\n".encode())
        os.close(fd)
    except OSError:
        pass


def _map_to_root(uid: int, gid: int) -> None:
    """Inside a fresh user namespace: be root there, mapped to the engine's own uid and gid."""
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")


def _answer(chan: "socket.socket") -> bool:
    """Unprivileged netns: the engine cannot setns() into our namespace, so it asks us for sockets.

    A request is one datagram ``b"<family> <type>"``; the reply carries the new socket with
    SCM_RIGHTS. Returns False once the engine closed its end."""
    try:
        request = chan.recv(64)
    except OSError:
        return False
    if not request:
        return False
    try:
        family, type_ = (int(x) for x in request.split())
        made = socket.socket(family, type_)
        try:
            chan.sendmsg([b"ok"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [made.fileno()]))])
        finally:
            made.close()
    except (OSError, ValueError) as exc:
        try:
            chan.send(f"error {exc}".encode())
        except OSError:
            return False
    return True


def _wait_serving(init: int, channel: int) -> int:
    """Wait for the init while answering socket requests. No thread: after unshare(CLONE_NEWPID)
    this process may not create any, so SIGCHLD wakes a select() through a wakeup pipe."""
    chan = socket.socket(fileno=channel)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, _swallow)
    signal.set_wakeup_fd(wake_w)
    watched = [chan, wake_r]
    while True:
        pid, status = os.waitpid(init, os.WNOHANG)
        if pid == init:
            return _exit_status(status)
        ready, _, _ = select.select(watched, [], [])
        if wake_r in ready:
            os.read(wake_r, 512)
        if chan in ready and not _answer(chan):
            watched.remove(chan)


def main(argv: list) -> int:
    fds = argv[2].split(",") if len(argv) > 2 else []
    if len(argv) < 5 or argv[3] != "--" or not all(x.isdigit() for x in fds):
        os.write(2, b"usage: _init.py netns|userns|process|probe|probe-userns HOSTNAME READY_FD[,CHANNEL_FD] -- CMD...\n")
        return 125
    mode, hostname, cmd = argv[0], argv[1], argv[4:]
    fd, channel = int(fds[0]), (int(fds[1]) if len(fds) > 1 else -1)
    for sig in FORWARDED:
        signal.signal(sig, _swallow)
    # Held until the command exists, then passed on to it (see _fork_forwarding).
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    if mode == "process":
        _check(_libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl")
        _sync(fd)
        _ready(fd, os.getpid())
        code = _run_init(cmd)
        _reap_all()
        return code
    userns = mode in ("userns", "probe-userns")
    uid, gid = os.getuid(), os.getgid()
    _check(_libc.unshare(CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWPID | (CLONE_NEWUSER if userns else 0)),
           "unshare")
    if userns:
        _map_to_root(uid, gid)
    name = hostname.encode()[:64]
    _check(_libc.sethostname(name, len(name)), "sethostname")
    _loopback_up()
    if mode.startswith("probe"):
        return 0
    _sync(fd)
    init = _fork_forwarding()
    if init == 0:
        for inherited in (fd, channel):
            try:
                os.close(inherited)
            except OSError:
                pass
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        code = _run_init(cmd)  # forwarded signals stay blocked until the command is forked
        os._exit(code)
    _ready(fd, init)
    if channel >= 0:
        return _wait_serving(init, channel)
    while True:
        try:
            pid, status = os.waitpid(init, 0)
        except ChildProcessError:
            return 125
        if pid == init:
            return _exit_status(status)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except OSError as exc:
        os.write(2, f"beacon-init: {exc}\n".encode())
        sys.exit(125)
