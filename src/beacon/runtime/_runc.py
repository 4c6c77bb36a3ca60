"""The runc backend: containers from images, run by runc (the OCI runtime dockerd and containerd use).

Per container, at start::

    network   a fresh network namespace made by the engine (bridge: plus a veth on the hub bridge and an
              address; none: loopback only; host: no namespace), handed to runc by path
    rootfs    the image's layers under an overlayfs mount (a copy where overlay is refused)
    bundle    <data>/containers/<id>/bundle/config.json from ``_spec``, plus hosts/hostname/resolv.conf
    process   ``runc run --keep``: runc stays the parent of the container, passes our pipes through as
              the container's stdout/stderr and exits with its status

Why a pre-made network namespace instead of a hook: the engine holds the namespace's fd from the start,
so a container that exits at once cannot take it away before the engine has opened it (the race the
old netns mode had under parallel load), and published-port relays open their sockets in it.
``--keep`` keeps the container's cgroup until the engine has read ``memory.oom_control`` (OOMKilled).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beacon.runtime import _spec as spec
from beacon.runtime._errors import EngineError, InvalidParameter
from beacon.runtime._isolation import Isolation, NetnsIsolation, Spawned, choose
from beacon.runtime._layers import LayerError, copy_layers, mount_overlay, resolve_in, umount
from beacon.runtime._stdio import open_console

if TYPE_CHECKING:
    from beacon.runtime._engine import Engine
    from beacon.runtime._model import Container

log = logging.getLogger(__name__)
RUNC = shutil.which("runc") or "/usr/sbin/runc"
INIT_CANDIDATES = ("/usr/bin/docker-init", "/usr/bin/tini-static", "/usr/libexec/docker/docker-init")
START_TIMEOUT = 30.0
MEMORY_CGROUP = Path("/sys/fs/cgroup/memory")


def runc_available() -> str:
    """"" when runc can be used here, else why not."""
    if os.geteuid() != 0:
        return "runc needs root"
    if not os.path.exists(RUNC):
        return "runc is not installed (apt-get install runc)"
    return ""


class RuncIsolation(NetnsIsolation):
    name = "runc"

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self.state_root = engine.data_dir / "runc"
        self.state_root.mkdir(parents=True, exist_ok=True)
        self.overlay_ok = True
        # `runc delete` of exited containers runs after their exit is reported (it only frees runc's
        # state and the cgroup); a new start of the same ID waits for it.
        self.deleting: dict[str, asyncio.Task[None]] = {}
        self.init_binary = next((p for p in INIT_CANDIDATES if os.path.exists(p)), "")

    async def setup(self) -> str:
        """The bridge, and what an engine that was killed left behind: its runc containers (still
        running, as runc's children outlive the engine) and their root filesystem mounts."""
        warning = await super().setup()
        for leftover in [p.name for p in self.state_root.iterdir() if p.is_dir()]:
            log.warning("removing container %s left running by an earlier engine", leftover[:12])
            await self._delete(leftover)
        for rootfs in (self.engine.data_dir / "containers").glob("*/bundle/rootfs"):
            if os.path.ismount(rootfs):
                umount(rootfs)
        return warning

    def runc(self, *args: str) -> list[str]:
        return [RUNC, "--root", str(self.state_root), *args]

    def exec_prefix(self, spawned: Spawned) -> list[str]:  # only through exec_command
        raise NotImplementedError

    # -- start ---------------------------------------------------------------------------------

    async def launch(self, c: Container, size: tuple[int, int] = (24, 80)) -> Spawned:
        """Start ``c``; returns once its process runs. Raises InvalidParameter for a start failure the
        user caused (command not found, bad user) and EngineError for the rest; nothing is left
        behind either way."""
        cdir = self.engine.data_dir / "containers" / c.id
        bundle = cdir / "bundle"
        rootfs = bundle / "rootfs"
        await self._delete(c.id)  # an engine crash could have left a kept container of this ID...
        if os.path.ismount(rootfs):
            umount(rootfs)  # ... and its root filesystem mounted
        netns_fd, address = -1, ""
        mounted = False
        master = slave = -1
        try:
            loop = asyncio.get_running_loop()
            mounted = await loop.run_in_executor(None, self._rootfs, c, cdir, rootfs)
            # reads the image's passwd and may seed a new volume from the image: off the event loop
            settings = await loop.run_in_executor(None, self._settings, c, cdir, rootfs)
            if c.network_mode != "host":
                netns_fd = await loop.run_in_executor(self._pool, self._new_netns)
                if c.network_mode != "none" and self.bridge is not None:
                    address = await self.bridge.plug_fd(netns_fd)
                settings.netns_path = f"/proc/{os.getpid()}/fd/{netns_fd}"
            self._write_files(c, cdir, address)
            (bundle / "config.json").write_text(json.dumps(spec.build(settings)))
            pidfile = bundle / "init.pid"
            pidfile.unlink(missing_ok=True)
            if c.tty:
                master, slave = open_console(*size)
                stdio: dict[str, Any] = {"stdin": slave, "stdout": slave, "stderr": asyncio.subprocess.PIPE}
            else:
                stdio = {"stdin": asyncio.subprocess.PIPE if c.open_stdin else asyncio.subprocess.DEVNULL,
                         "stdout": asyncio.subprocess.PIPE, "stderr": asyncio.subprocess.PIPE}
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self.runc("run", "--keep", "--no-new-keyring", "--bundle", str(bundle), "--pid-file",
                               str(pidfile), c.id), **stdio, start_new_session=True)
            finally:
                if slave >= 0:
                    os.close(slave)
            pid = await self._wait_started(proc, pidfile)
        except BaseException:
            if master >= 0:
                os.close(master)
            if netns_fd >= 0:
                os.close(netns_fd)
            if self.bridge is not None and address:
                self.bridge.unplug(address)
            await self._delete(c.id)
            if mounted:
                umount(rootfs)
            raise
        return Spawned(proc=proc, ns_pid=pid, netns_fd=netns_fd, address=address, runc_id=c.id,
                       bundle=str(bundle), console=master)

    async def _wait_started(self, proc: asyncio.subprocess.Process, pidfile: Path) -> int:
        """runc writes the pid file once the container's process runs; if runc exits first, the
        start failed and its stderr says why."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        delay = 0.001
        while True:
            try:
                text = pidfile.read_text().strip()
                if text:
                    return int(text)
            except (OSError, ValueError):
                pass
            if proc.returncode is not None:
                assert proc.stderr is not None
                err = (await proc.stderr.read()).decode(errors="replace").strip()
                if pidfile.exists():  # exited at once, after starting
                    return int(pidfile.read_text().strip() or 0)
                raise EngineError(_runc_error(err) or f"runc exited with status {proc.returncode}")
            if loop.time() > deadline:
                proc.kill()
                raise EngineError("runc did not start the container in time")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.005)  # a stat every 5 ms is cheap; runc needs ~40 ms

    def _rootfs(self, c: Container, cdir: Path, rootfs: Path) -> bool:
        store = self.engine.images
        lowers = store.layer_dirs(c.image_id) if c.image_id else []
        if not lowers:
            empty = cdir / "empty"
            empty.mkdir(exist_ok=True)
            lowers = [empty]
        if self.overlay_ok:
            try:
                mount_overlay(lowers, cdir / "upper", cdir / "work", rootfs)
                mounted = True
            except OSError as exc:
                log.warning("overlay mount refused (%s); containers get a copy of their image instead", exc)
                self.overlay_ok = False
        if not self.overlay_ok:
            if not (rootfs / ".beacon-copied").exists():
                shutil.rmtree(rootfs, ignore_errors=True)
                copy_layers(lowers, rootfs)
                (rootfs / ".beacon-copied").touch()
            mounted = False
        try:
            self._prepare(c, str(rootfs))
        except BaseException:
            if mounted:
                umount(rootfs)
            raise
        return mounted

    def _prepare(self, c: Container, root: str) -> None:
        """Checks and directories dockerd makes before the process starts: the working directory,
        mount points, and that the command exists (exit 127 as with Docker, and nothing started)."""
        for dest in ["/etc", c.working_dir or "/"]:
            os.makedirs(resolve_in(root, dest), exist_ok=True)
        uid, gid, _, home = spec.lookup_user(root, c.user)
        env = spec.merge_env(c.image_env, c.env, c.hostname, home)
        path = next((e[5:] for e in env if e.startswith("PATH=")), spec.DEFAULT_PATH)
        if not find_in_rootfs(root, c.argv[0], path, c.working_dir or "/"):
            raise InvalidParameter(f'failed to create task for container: failed to create shim task: OCI runtime '
                                   f'create failed: runc create failed: unable to start container process: exec: '
                                   f'"{c.argv[0]}": executable file not found in $PATH: unknown')

    def _settings(self, c: Container, cdir: Path, rootfs: Path) -> spec.Settings:
        root = str(rootfs)
        uid, gid, groups, home = spec.lookup_user(root, c.user)
        binds = []
        for source, dest, ro in self.engine.volumes.resolve_binds(c, root):
            binds.append((source, dest, ro))
        return spec.Settings(
            id=c.id, argv=c.argv, env=spec.merge_env(c.image_env, c.env, c.hostname, home),
            cwd=c.working_dir or "/", uid=uid, gid=gid, groups=groups, hostname=c.hostname, rootfs=root,
            read_only=c.read_only, privileged=c.privileged, cap_add=c.cap_add, cap_drop=c.cap_drop,
            files={"/etc/hosts": str(cdir / "hosts"), "/etc/hostname": str(cdir / "hostname"),
                   "/etc/resolv.conf": str(cdir / "resolv.conf")},
            binds=binds, tmpfs=dict(c.tmpfs), memory=c.memory, memory_swap=c.memory_swap,
            nano_cpus=c.nano_cpus, cpu_shares=c.cpu_shares, pids_limit=c.pids_limit,
            init_binary=self.init_binary if c.init else "", tty=c.tty)

    def _write_files(self, c: Container, cdir: Path, address: str) -> None:
        ip = address.partition("/")[0]
        hosts = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                 "fe00::0\tip6-localnet", "ff00::0\tip6-mcastprefix", "ff02::1\tip6-allnodes",
                 "ff02::2\tip6-allrouters"]
        hosts += [f"{ip}\t{c.hostname}"] if ip else []
        for peer, names in self.engine.networks.peers(self.engine, c.network_mode, c.id):
            hosts.append(f"{peer}\t{' '.join(names)}")
        for entry in c.extra_hosts:
            name, _, addr = entry.partition(":")
            hosts.append(f"{addr}\t{name}")
        (cdir / "hosts").write_text("\n".join(hosts) + "\n")
        (cdir / "hostname").write_text(c.hostname + "\n")
        (cdir / "resolv.conf").write_text(self.resolv_conf(c, bool(ip)))

    def resolv_conf(self, c: Container, on_bridge: bool) -> str:
        if c.dns:
            return "".join(f"nameserver {d}\n" for d in c.dns)
        gateway = self.engine.gateway
        if on_bridge and gateway is not None:
            return f"nameserver {gateway.address}\noptions ndots:0\n"
        try:
            host = Path("/etc/resolv.conf").read_text()
        except OSError:
            host = ""
        # Like dockerd: the host's file, without loopback resolvers a container cannot reach.
        lines = [ln for ln in host.splitlines() if not (ln.startswith("nameserver") and
                                                        (" 127." in ln or " ::1" in ln))]
        return "\n".join(lines) + "\n"

    def _new_netns(self) -> int:
        """In the helper thread: a fresh network namespace with loopback up; its fd."""
        from beacon.runtime._bridge import loopback_up

        if self._libc.unshare(0x40000000) != 0:
            raise OSError(0, "unshare(CLONE_NEWNET) failed")
        try:
            loopback_up()
            return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            if self._libc.setns(self._host_fd, 0x40000000) != 0:
                log.error("setns back to the host namespace failed; replacing the helper thread")

    # -- run time ------------------------------------------------------------------------------

    def signal(self, spawned: Spawned, sig: int) -> None:
        """Signals go to the container's init (as ``docker kill`` does); SIGKILL of a pid namespace's
        init kills all of it. Before the init exists, runc itself forwards them."""
        target = spawned.ns_pid or spawned.pid
        try:
            os.kill(target, sig)
        except (ProcessLookupError, PermissionError):
            pass

    async def finish(self, spawned: Spawned) -> bool:
        """After runc exited: read OOMKilled, delete the kept container, unmount, close handles."""
        oom = _oom_killed(spawned.runc_id)
        cid = spawned.runc_id
        task = asyncio.create_task(self._delete(cid))
        self.deleting[cid] = task
        task.add_done_callback(lambda t: self.deleting.pop(cid, None) if self.deleting.get(cid) is t else None)
        if spawned.bundle:
            try:
                umount(Path(spawned.bundle) / "rootfs")
            except OSError as exc:
                log.warning("unmount of %s: %s", spawned.bundle, exc)
        if spawned.netns_fd >= 0:
            os.close(spawned.netns_fd)
            spawned.netns_fd = -1
        if spawned.console >= 0:
            os.close(spawned.console)
            spawned.console = -1
        self._unplug(spawned.address)
        spawned.address = ""
        spawned.closed = True
        return oom

    def release(self, spawned: Spawned) -> None:  # finish() does it for runc
        pass

    async def settle(self) -> None:
        """Wait for the deletions still running (engine shutdown)."""
        await asyncio.gather(*self.deleting.values(), return_exceptions=True)

    async def _delete(self, cid: str) -> None:
        pending = self.deleting.get(cid)
        if pending is not None and pending is not asyncio.current_task():
            await asyncio.shield(pending)
        if not (self.state_root / cid).exists():
            return  # nothing kept: spare the ~10 ms of a runc process
        proc = await asyncio.create_subprocess_exec(*self.runc("delete", "--force", cid),
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)
        await proc.wait()

    def exec_command(self, spawned: Spawned, c: Container, argv: list[str], env: dict[str, str],
                     cwd: str, user: str = "", tty: bool = False) -> tuple[list[str], dict[str, str], str]:
        root = str(Path(spawned.bundle) / "rootfs")
        if not find_in_rootfs(root, argv[0], env.get("PATH", spec.DEFAULT_PATH), cwd or "/"):
            raise InvalidParameter(f'OCI runtime exec failed: exec failed: unable to start container process: '
                                   f'exec: "{argv[0]}": executable file not found in $PATH: unknown')
        uid, gid, _, _ = spec.lookup_user(root, user or c.user)
        args = ["exec", "--cwd", cwd or "/", "--user", f"{uid}:{gid}"]
        if tty:
            args.append("--tty")
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        return self.runc(*args, c.id, *argv), dict(os.environ), "/"

    async def pause(self, spawned: Spawned, resume: bool) -> None:
        proc = await asyncio.create_subprocess_exec(*self.runc("resume" if resume else "pause", spawned.runc_id),
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise EngineError(_runc_error(err.decode(errors="replace")) or "runc pause failed")

    async def stats(self, spawned: Spawned) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(*self.runc("events", "--stats", spawned.runc_id),
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.DEVNULL)
        out, _ = await proc.communicate()
        try:
            return dict(json.loads(out).get("data") or {})
        except ValueError:
            return {}

    async def update(self, spawned: Spawned, memory: int, nano_cpus: int, pids: int) -> None:
        args = ["update"]
        if memory:
            args += ["--memory", str(memory), "--memory-swap", str(2 * memory)]
        if nano_cpus:
            args += ["--cpu-period", str(spec.CPU_PERIOD), "--cpu-quota", str(nano_cpus * spec.CPU_PERIOD // 10**9)]
        if pids:
            args += ["--pids-limit", str(pids)]
        proc = await asyncio.create_subprocess_exec(*self.runc(*args, spawned.runc_id),
                                                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise EngineError(_runc_error(err.decode(errors="replace")) or "runc update failed")

    async def open_socket(self, spawned: Spawned, family: int, type_: int) -> socket.socket:
        if spawned.netns_fd < 0:  # --network host
            sock = socket.socket(family, type_)
            sock.setblocking(False)
            return sock
        return await super().open_socket(spawned, family, type_)


def find_in_rootfs(root: str, argv0: str, path: str, cwd: str) -> bool:
    """Whether ``argv0`` names an executable file inside ``root`` (symlinks resolved inside it)."""
    if not argv0:
        return False
    candidates = [argv0 if argv0.startswith("/") else os.path.join(cwd, argv0)] if "/" in argv0 else \
        [os.path.join(d or "/", argv0) for d in path.split(":")]
    for cand in candidates:
        try:
            real = resolve_in(root, cand)
        except LayerError:
            continue
        if os.path.isfile(real) and os.access(real, os.X_OK):
            return True
    return False


def _oom_killed(cid: str) -> bool:
    try:
        text = (MEMORY_CGROUP / "beacon" / cid / "memory.oom_control").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value) > 0
    return False


def _runc_error(text: str) -> str:
    """runc's last error line, without its log decoration."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                line = json.loads(line).get("msg", line)
            except ValueError:
                pass
        if line:
            return line.removeprefix("runc run failed: ").removeprefix("ERRO[0000] ")
    return ""


def kill_all(spawned: Spawned) -> None:
    try:
        os.kill(spawned.ns_pid or spawned.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def choose_backend(engine: Engine) -> tuple[Isolation, str]:
    """runc when asked for, or on auto as root with runc installed; otherwise the older backends,
    which run on the host filesystem and so always come with a warning."""
    requested = engine.requested_isolation
    if requested in ("auto", "runc"):
        reason = runc_available()
        if not reason:
            backend = RuncIsolation(engine)
            return backend, await backend.setup()
        if requested == "runc":
            raise EngineError(f"runc isolation unavailable: {reason}")
        fallback, _ = await choose("process")
        return fallback, (f"WARNING: runc isolation unavailable ({reason}); containers run as plain processes "
                          "on the host filesystem and network, without images")
    chosen, warning = await choose(requested)
    return chosen, warning or (f"WARNING: {chosen.name} isolation: containers run on the host filesystem, "
                               "without images, users, volumes or limits")
