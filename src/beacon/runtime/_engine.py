"""The container engine: lifecycle, restart policies, health probes, persistence.

The HTTP side lives in ``_api``; this module knows nothing about HTTP. Each container has one
``_Slot`` holding what only exists while the engine runs (the process, relays, tasks, futures).
A container's state is written to ``<data_dir>/containers/<id>/config.json`` on every change.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from beacon.runtime import _io
from beacon.runtime._errors import Conflict, EngineError, InvalidParameter, NotModified, no_such_container
from beacon.runtime._events import EventBus
from beacon.runtime._exec import ExecManager
from beacon.runtime._images import ImageStore, merge_image
from beacon.runtime._isolation import Isolation, NetnsIsolation, Spawned
from beacon.runtime._layers import umount
from beacon.runtime._logs import LogStore, rfc3339
from beacon.runtime._model import (
    Container,
    create_warnings,
    new_id,
    parse_create,
    random_name,
    signal_number,
)
from beacon.runtime._networks import Networks
from beacon.runtime._relay import PortRelay
from beacon.runtime._volumes import Volumes, validate_binds

log = logging.getLogger(__name__)
SHUTDOWN_STOP_TIMEOUT = 5.0
KILL_WAIT = 10.0
PIPE_DRAIN_TIMEOUT = 2.0


def now_rfc3339() -> str:
    return rfc3339(time.time_ns())


@dataclass
class _Slot:
    """What the engine holds for one container while it runs."""

    c: Container
    logs: LogStore
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    spawned: Spawned | None = None
    relays: list[PortRelay] = field(default_factory=list)
    supervisor: asyncio.Task[None] | None = None
    health_task: asyncio.Task[None] | None = None
    restart_task: asyncio.Task[None] | None = None
    next_exit: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    removed: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    stop_requested: bool = False
    stdin: asyncio.Queue[bytes | None] | None = None  # -i: input from attach, waiting for the process
    size: tuple[int, int] = (24, 80)  # -t: rows, columns (a resize before start is kept for it)


def find_executable(argv0: str, path: str, cwd: str) -> bool:
    if "/" in argv0:
        full = os.path.join(cwd or "/", argv0)
        return os.path.isfile(full) and os.access(full, os.X_OK)
    return shutil.which(argv0, path=path) is not None


class Engine:
    """An embedded container engine serving the Docker Engine API on a unix socket.

    ``await start()`` in a running loop; ``await stop()`` stops every container (their state stays on
    disk and they are listed as exited after the next start) and closes the socket.
    """

    def __init__(self, data_dir: str | os.PathLike[str], socket_path: str | None = None,
                 isolation: str = "auto") -> None:
        self.data_dir = Path(data_dir)
        self.socket_path = str(socket_path or self.data_dir / "engine.sock")
        self.requested_isolation = isolation
        self.isolation = ""
        self.warnings: list[str] = []
        self.events = EventBus()
        self.slots: dict[str, _Slot] = {}
        self.exec = ExecManager(self)
        self.started_at = time.time()
        self._backend: Isolation | None = None
        self._api: Any = None
        self._restart_on_start: list[str] = []
        self._lock_fd = -1
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.images = ImageStore(self.data_dir / "images")
        self.volumes = Volumes(self.data_dir / "volumes")
        self.networks = Networks(self.data_dir / "networks.json")
        self.gateway: Any = None  # _gateway.Gateway once connect_agent() ran

    # -- lifecycle of the engine ---------------------------------------------------------------

    async def start(self) -> None:
        """Serve the API; on failure everything taken so far is released and the error raised."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        from beacon.runtime._api import ApiServer

        (self.data_dir / "containers").mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.data_dir / "engine.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise EngineError(f"another engine is using {self.data_dir}") from None
        from beacon.runtime._runc import choose_backend

        self._backend, warning = await choose_backend(self)
        self.isolation = self._backend.name
        if warning:
            self.warnings.append(warning)
            log.warning("%s", warning)
        self._load()
        await self._start_gateway()
        self._api = ApiServer(self)
        await self._api.start(self.socket_path)
        for cid in self._restart_on_start:
            self.slots[cid].c.state.status = "restarting"
            self._schedule_restart(self.slots[cid], 0.0)

    async def connect_agent(self, http: tuple[str, int] | None, dns: tuple[str, int] | None) -> bool:
        """Let containers reach the agent: the bridge gateway's 8500 and 53 relay to these loopback
        listeners. False when there is no bridge (no gateway) in this isolation mode."""
        if self.gateway is None:
            return False
        self.gateway.http, self.gateway.dns = http, dns
        return True

    async def _start_gateway(self) -> None:
        backend = self._backend
        if not isinstance(backend, NetnsIsolation) or backend.bridge is None or self.isolation != "runc":
            return
        from beacon.runtime._gateway import Gateway  # imports dnslib: only where it is used
        gateway = Gateway(backend, lambda src, name: self.networks.lookup(self, src, name))
        try:
            await gateway.start()
        except OSError as exc:
            await gateway.stop()
            self.warnings.append(f"WARNING: containers get no DNS or way to the agent ({exc})")
            return
        self.gateway = gateway

    async def stop(self) -> None:
        self._stopping = True
        if self._api is not None:
            await self._api.stop()
            self._api = None
        if self.gateway is not None:
            await self.gateway.stop()
            self.gateway = None
        slots = list(self.slots.values())
        for slot in slots:
            if slot.restart_task is not None:
                slot.restart_task.cancel()
        await asyncio.gather(*(self._shutdown_one(s) for s in slots), return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)  # auto-removals under way
        await self.exec.close()
        settle = getattr(self._backend, "settle", None)
        if settle is not None:
            await settle()
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    async def _shutdown_one(self, slot: _Slot) -> None:
        async with slot.lock:
            if slot.c.state.status == "running":
                await self._stop_locked(slot, SHUTDOWN_STOP_TIMEOUT, manual=False)

    @property
    def backend(self) -> Isolation:
        if self._backend is None:
            raise EngineError("engine not started")
        return self._backend

    def _dir(self, cid: str) -> Path:
        return self.data_dir / "containers" / cid

    def save_container(self, c: Container) -> None:
        path = self._dir(c.id)
        if not path.is_dir():
            return  # removed meanwhile
        tmp = path / "config.json.tmp"
        tmp.write_text(json.dumps(c.to_dict()))
        os.replace(tmp, path / "config.json")

    def _load(self) -> None:
        for entry in sorted((self.data_dir / "containers").iterdir()):
            try:
                c = Container.from_dict(json.loads((entry / "config.json").read_text()))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("skipping unreadable container state %s: %s", entry, exc)
                continue
            if c.state.status in ("running", "restarting"):
                # The engine did not stop it (crash): the process is gone or no longer ours.
                c.state.status, c.state.exit_code, c.state.pid, c.address = "exited", 137, 0, ""
                c.state.finished_at, c.state.finished_unix = now_rfc3339(), time.time()
            c.state.health_status = "unhealthy" if c.state.health_status else ""
            slot = _Slot(c=c, logs=LogStore(entry / "log.jsonl"))
            self.slots[c.id] = slot
            if c.restart_policy["Name"] in ("always", "unless-stopped") and not c.state.manually_stopped:
                self._restart_on_start.append(c.id)

    # -- lookup --------------------------------------------------------------------------------

    def resolve(self, ref: str) -> _Slot:
        ref = (ref or "").strip()
        if not ref:
            raise no_such_container(ref)
        if ref in self.slots:
            return self.slots[ref]
        name = ref.lstrip("/")
        for slot in self.slots.values():
            if slot.c.name == name:
                return slot
        matches = [s for s in self.slots.values() if s.c.id.startswith(ref.lower())]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidParameter(f"multiple IDs found with provided prefix: {ref}")
        raise no_such_container(ref)

    def get(self, ref: str) -> Container:
        return self.resolve(ref).c

    def containers(self) -> list[Container]:
        return sorted((s.c for s in self.slots.values()), key=lambda c: c.created_unix, reverse=True)

    def emit_event(self, c: Container, action: str, **extra: str) -> None:
        self.events.emit("container", action, c.id, {**c.label_attributes(), **extra}, from_=c.image)

    # -- create / start ------------------------------------------------------------------------

    async def create(self, body: Any, name: str | None = None) -> tuple[str, list[str]]:
        spec = parse_create(body, name)
        name = (name or "").lstrip("/")
        if name:
            for slot in self.slots.values():
                if slot.c.name == name:
                    raise Conflict(
                        f'Conflict. The container name "/{name}" is already in use by container "{slot.c.id}". '
                        "You have to remove (or rename) that container to be able to reuse that name.")
        else:
            taken = {s.c.name for s in self.slots.values()}
            name = random_name()
            while name in taken:
                name = f"{random_name()}{len(taken)}"
        if self.isolation != "runc" and (spec["tty"] or spec["open_stdin"]):
            raise InvalidParameter(f"-t and -i need runc isolation (this engine runs {self.isolation})")
        if self.isolation == "runc":
            validate_binds(spec["binds"], spec["mounts"])
            if not spec["network_mode"].startswith("container:"):
                self.networks.get(spec["network_mode"])  # 404 for an unknown network
            else:
                raise InvalidParameter("--network container:<name> is not supported by beacon engine")
            await asyncio.get_running_loop().run_in_executor(None, merge_image, self.images, spec)
        if not (spec["cmd"] or spec["entrypoint"]):
            raise InvalidParameter("No command specified")
        cid = new_id()
        spec["hostname"] = spec["hostname"] or cid[:12]
        c = Container(id=cid, name=name, created=now_rfc3339(), created_unix=time.time(), **spec)
        path = self._dir(cid)
        path.mkdir(parents=True)
        self.slots[cid] = _Slot(c=c, logs=LogStore(path / "log.jsonl"))
        if c.open_stdin:
            self.slots[cid].stdin = asyncio.Queue()
        self.save_container(c)
        self.emit_event(c, "create")
        return cid, (create_warnings(body) if self.isolation != "runc" else [])

    async def start_container(self, ref: str) -> None:
        slot = self.resolve(ref)
        async with slot.lock:
            if slot.c.state.status == "running":
                raise NotModified("container already started")
            try:
                await self._start_locked(slot)
            except EngineError:
                if slot.c.auto_remove:  # dockerd removes it too, so `run --rm` does not wait forever
                    self._schedule_auto_remove(slot.c.id)
                raise

    async def _start_locked(self, slot: _Slot) -> None:
        if self.isolation == "runc":
            await self._start_runc(slot)
            return
        c, backend = slot.c, self.backend
        env = c.process_env()
        argv = c.argv
        cwd = c.working_dir or "/"
        if not os.path.isdir(cwd):
            self._fail_start(c, 126, f"working directory {cwd!r} does not exist on the host")
        if not find_executable(argv[0], env["PATH"], cwd):
            self._fail_start(c, 127, f'failed to create task for container: exec: "{argv[0]}": '
                                     "executable file not found in $PATH: unknown")
        relays = await self._bind_ports(c)
        try:
            spawned = await backend.spawn(argv, env, cwd, c.hostname, asyncio.subprocess.PIPE,
                                          asyncio.subprocess.PIPE)
        except BaseException:
            for relay in relays:
                await relay.close()
            raise
        self._running(slot, spawned, relays)

    async def _start_runc(self, slot: _Slot) -> None:
        from beacon.runtime._runc import RuncIsolation

        c, backend = slot.c, self.backend
        assert isinstance(backend, RuncIsolation)
        relays = await self._bind_ports(c)
        try:
            spawned = await backend.launch(c, slot.size)
        except InvalidParameter as exc:
            for relay in relays:
                await relay.close()
            code = 127 if "not found" in exc.message else 126
            self._fail_start(c, code, exc.message)
        except BaseException:
            for relay in relays:
                await relay.close()
            raise
        c.state.oom_killed = False
        self._running(slot, spawned, relays)

    def _running(self, slot: _Slot, spawned: Spawned, relays: list[PortRelay]) -> None:
        c = slot.c
        for relay in relays:
            relay.spawned = spawned
        slot.spawned, slot.relays, slot.stop_requested = spawned, relays, False
        c.address = spawned.address
        st = c.state
        st.status, st.pid, st.exit_code, st.error = "running", spawned.pid, 0, ""
        st.started_at, st.started_unix, st.manually_stopped = now_rfc3339(), time.time(), False
        st.failing_streak = 0
        st.health_status = "starting" if c.health and c.health.argv() else ""
        slot.logs.open()
        self.save_container(c)
        self.emit_event(c, "start")
        slot.supervisor = asyncio.create_task(self._supervise(slot, spawned))
        if st.health_status:
            slot.health_task = asyncio.create_task(_io.health_loop(self, slot.c, spawned))

    def _fail_start(self, c: Container, code: int, message: str) -> None:
        st = c.state
        st.status, st.exit_code, st.error = ("exited" if st.started_unix else "created"), code, message
        self.save_container(c)
        raise InvalidParameter(message)

    async def _bind_ports(self, c: Container) -> list[PortRelay]:
        wanted = {k: list(v) for k, v in c.port_bindings.items()}
        if c.publish_all:
            for key in c.exposed_ports:
                wanted.setdefault(key, [{"HostIp": "", "HostPort": ""}])
        relays: list[PortRelay] = []
        ports: dict[str, list[dict[str, str]]] = {}
        try:
            for key, bindings in wanted.items():
                port, _, proto = key.partition("/")
                for b in bindings:
                    relay = PortRelay(self.backend, Spawned(proc=None, ns_pid=0), proto, b["HostIp"],  # type: ignore[arg-type]
                                      int(b["HostPort"] or 0), int(port))
                    bound = await relay.start()
                    relays.append(relay)
                    ports.setdefault(key, []).append({"HostIp": relay.host_ip, "HostPort": str(bound)})
        except BaseException:
            for relay in relays:
                await relay.close()
            raise
        c.ports = ports
        return relays

    async def _supervise(self, slot: _Slot, spawned: Spawned) -> None:
        proc = spawned.proc
        if spawned.console >= 0:
            pumps = [asyncio.create_task(_io.pump_console(slot.logs, spawned.console))]
        else:
            pumps = [asyncio.create_task(_io.pump(slot.logs, proc.stdout, 1)),
                     asyncio.create_task(_io.pump(slot.logs, proc.stderr, 2))]
        feeder = _io.feed_stdin(slot.stdin, spawned, slot.c.stdin_once)
        await proc.wait()
        if feeder is not None:
            feeder.cancel()
        # Output still in the pipes is read; a straggler that kept them open does not hold the exit.
        _, late = await asyncio.wait(pumps, timeout=PIPE_DRAIN_TIMEOUT)
        for task in late:
            task.cancel()
        code = proc.returncode if proc.returncode is not None else 255
        if code < 0:
            code = 128 - code
        await self._on_exit(slot, spawned, code)

    async def _on_exit(self, slot: _Slot, spawned: Spawned, code: int) -> None:
        c, st = slot.c, slot.c.state
        finish = getattr(self.backend, "finish", None)
        if finish is not None:
            st.oom_killed = await finish(spawned)
        self.backend.release(spawned)
        for relay in slot.relays:
            await relay.close()
        slot.relays, slot.spawned = [], None
        if slot.health_task is not None:
            slot.health_task.cancel()
            slot.health_task = None
        slot.logs.close()
        await self.exec.container_exited(c.id)
        st.status, st.exit_code, st.pid, st.paused = "exited", code, 0, False
        c.address = ""
        st.finished_at, st.finished_unix = now_rfc3339(), time.time()
        if st.health_status:
            st.health_status = "unhealthy"
        restart_delay = None if slot.stop_requested else self._restart_delay(c)
        if restart_delay is not None:
            st.status = "restarting"
        self.save_container(c)
        self.emit_event(c, "die", exitCode=str(code), execDuration=str(int(st.finished_unix - st.started_unix)))
        fut, slot.next_exit = slot.next_exit, asyncio.get_running_loop().create_future()
        fut.set_result(code)
        if restart_delay is not None:
            self._schedule_restart(slot, restart_delay)
        elif c.auto_remove:
            self._schedule_auto_remove(c.id)

    def _schedule_auto_remove(self, cid: str) -> None:
        task = asyncio.create_task(self._auto_remove(cid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _auto_remove(self, cid: str) -> None:
        try:
            await self.remove(cid, force=True)
        except EngineError as exc:  # already removed by hand, or removal in progress
            log.debug("auto-remove of %s: %s", cid, exc)

    def _restart_delay(self, c: Container) -> float | None:
        policy, st = c.restart_policy, c.state
        name = policy["Name"]
        if name == "no" or st.manually_stopped:
            return None
        if name == "on-failure":
            limit = int(policy.get("MaximumRetryCount") or 0)
            if st.exit_code == 0 or (limit and st.restart_count >= limit):
                return None
        ran = st.finished_unix - st.started_unix
        if ran >= 10:  # a container that ran a while restarts at once, as dockerd does
            return 0.1
        return min(60.0, 0.1 * 2 ** min(st.restart_count, 10))

    def _schedule_restart(self, slot: _Slot, delay: float) -> None:
        async def restart() -> None:
            await asyncio.sleep(delay)
            # From here on the restart is not cancelled (it could orphan a half-spawned process):
            # stop, rm and engine shutdown wait for the lock and then stop what it started.
            slot.restart_task = None
            async with slot.lock:
                if slot.c.state.status != "restarting" or slot.c.id not in self.slots or self._stopping:
                    return
                slot.c.state.restart_count += 1
                try:
                    await self._start_locked(slot)
                except (EngineError, OSError) as exc:
                    log.warning("restart of %s failed: %s", slot.c.name, exc)
                    slot.c.state.status = "exited"
                    self.save_container(slot.c)

        task = asyncio.create_task(restart())
        slot.restart_task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- stop / kill / restart / wait / remove -------------------------------------------------

    def _cancel_restart(self, slot: _Slot) -> bool:
        if slot.restart_task is not None:
            slot.restart_task.cancel()
            slot.restart_task = None
            slot.c.state.status = "exited"
            slot.c.state.manually_stopped = True
            self.save_container(slot.c)
            return True
        return False

    async def stop_container(self, ref: str, timeout: float | None = None, sig: str | None = None) -> None:
        slot = self.resolve(ref)
        if self._cancel_restart(slot):
            return
        async with slot.lock:
            if slot.c.state.status != "running":
                raise NotModified("container already stopped")
            await self._stop_locked(slot, self._stop_timeout(slot.c, timeout), manual=True,
                                    signum=signal_number(sig or slot.c.stop_signal or "SIGTERM"))

    async def _thaw(self, slot: _Slot) -> None:
        """A paused (frozen) container cannot act on a signal: resume it first, as dockerd does."""
        pause = getattr(self.backend, "pause", None)
        if slot.c.state.paused and slot.spawned is not None and pause is not None:
            await pause(slot.spawned, True)
            slot.c.state.paused = False

    @staticmethod
    def _stop_timeout(c: Container, timeout: float | None) -> float:
        if timeout is not None:
            return timeout
        return float(c.stop_timeout) if c.stop_timeout is not None else 10.0

    async def _stop_locked(self, slot: _Slot, timeout: float, manual: bool,
                           signum: int = signal.SIGTERM) -> None:
        c, spawned = slot.c, slot.spawned
        assert spawned is not None
        slot.stop_requested = True
        c.state.manually_stopped = manual
        exited = slot.next_exit
        await self._thaw(slot)
        self.emit_event(c, "kill", signal=str(int(signum)))
        self.backend.signal(spawned, signum)
        try:
            async with asyncio.timeout(max(timeout, 0)):
                await asyncio.shield(exited)
        except TimeoutError:
            self.emit_event(c, "kill", signal=str(int(signal.SIGKILL)))
            self.backend.signal(spawned, signal.SIGKILL)
            async with asyncio.timeout(KILL_WAIT):
                await asyncio.shield(exited)
        self.emit_event(c, "stop")

    async def kill(self, ref: str, sig: str | int | None = None) -> None:
        slot = self.resolve(ref)
        signum = signal_number(sig)
        if slot.c.state.status != "running" or slot.spawned is None:
            raise Conflict(f"Container {slot.c.id} is not running")
        if signum in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            slot.stop_requested = True
            slot.c.state.manually_stopped = True
        exited = slot.next_exit
        await self._thaw(slot)
        self.emit_event(slot.c, "kill", signal=str(signum))
        self.backend.signal(slot.spawned, signum)
        if signum == signal.SIGKILL:
            async with asyncio.timeout(KILL_WAIT):
                await asyncio.shield(exited)

    async def restart(self, ref: str, timeout: float | None = None) -> None:
        slot = self.resolve(ref)
        self._cancel_restart(slot)
        async with slot.lock:
            if slot.c.state.status == "running":
                await self._stop_locked(slot, self._stop_timeout(slot.c, timeout), manual=True,
                                        signum=signal_number(slot.c.stop_signal or "SIGTERM"))
            await self._start_locked(slot)
        self.emit_event(slot.c, "restart")

    def wait_target(self, ref: str, condition: str = "not-running") -> asyncio.Future[int] | int:
        """What ``wait`` waits for, resolved now (the CLI sends wait before start): a future, or the
        exit code when the condition already holds."""
        slot = self.resolve(ref)
        if condition == "removed":
            return slot.removed
        if condition == "next-exit":
            return slot.next_exit
        if condition not in ("", "not-running"):
            raise InvalidParameter(f"invalid condition: {condition!r}")
        if slot.c.state.status in ("running", "restarting"):
            return slot.next_exit
        return slot.c.state.exit_code

    async def wait(self, ref: str, condition: str = "not-running") -> int:
        target = self.wait_target(ref, condition)
        return target if isinstance(target, int) else await asyncio.shield(target)

    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        slot = self.resolve(ref)
        if slot.c.state.status == "removing":
            raise Conflict(f"removal of container {slot.c.id} is already in progress")
        self._cancel_restart(slot)
        async with slot.lock:
            c = slot.c
            if c.state.status == "running":
                if not force:
                    raise Conflict(f"You cannot remove a running container {c.id}. Stop the container "
                                   "before attempting removal or force remove")
                slot.stop_requested = True
                c.state.manually_stopped = True
                exited = slot.next_exit
                await self._thaw(slot)
                self.emit_event(c, "kill", signal=str(int(signal.SIGKILL)))
                assert slot.spawned is not None
                self.backend.signal(slot.spawned, signal.SIGKILL)
                async with asyncio.timeout(KILL_WAIT):
                    await asyncio.shield(exited)
            if c.id not in self.slots:
                return
            c.state.status = "removing"
            del self.slots[c.id]
            rootfs = self._dir(c.id) / "bundle" / "rootfs"
            if os.path.ismount(rootfs):  # never delete through a mounted root filesystem
                umount(rootfs)
            shutil.rmtree(self._dir(c.id), ignore_errors=True)
            if volumes or c.auto_remove:
                used = {n for other in self.slots.values() for n in self.volumes.names_used(other.c)}
                self.volumes.remove_anonymous(c, used)
            self.exec.forget(c.id)
            self.emit_event(c, "destroy")
            for fut in (slot.removed, slot.next_exit):
                if not fut.done():
                    fut.set_result(c.state.exit_code)

    # -- health --------------------------------------------------------------------------------

    # -- info ----------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        states = [s.c.state.status for s in self.slots.values()]
        running = states.count("running")
        return {"Containers": len(states), "ContainersRunning": running, "ContainersPaused": 0,
                "ContainersStopped": len(states) - running}

    def images_in_use(self) -> dict[str, list[str]]:
        """Image ID -> IDs of the containers created from it."""
        out: dict[str, list[str]] = {}
        for c in self.containers():
            if c.image_id:
                out.setdefault(c.image_id, []).append(c.id)
        return out
