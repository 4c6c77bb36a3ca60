"""``docker exec`` and health probes: run a command inside a running container's isolation."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from beacon.runtime import _stdio
from beacon.runtime._errors import Conflict, InvalidParameter, NotFound
from beacon.runtime._isolation import Spawned

EXEC_KEEP = 300.0

if TYPE_CHECKING:
    from beacon.runtime._engine import Engine
    from beacon.runtime._model import Container


@dataclass
class ExecInstance:
    id: str
    container_id: str
    cmd: list[str]
    env: list[str]
    working_dir: str
    tty: bool
    attach_stdout: bool
    attach_stderr: bool
    attach_stdin: bool = False
    user: str = ""
    running: bool = False
    started: bool = False
    stdin: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue, repr=False)
    console: int = -1  # -t: master of the pty runc exec holds the slave of
    size: tuple[int, int] = (24, 80)
    exit_code: int | None = None
    pid: int = 0
    proc: asyncio.subprocess.Process | None = field(default=None, repr=False)


def _check_str_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidParameter(f"{what} must be a list of strings")
    return list(value)


class ExecManager:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.instances: dict[str, ExecInstance] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.timers: dict[str, asyncio.TimerHandle] = {}

    def create(self, ref: str, body: Any) -> str:
        slot = self.engine.resolve(ref)
        if not isinstance(body, dict):
            raise InvalidParameter("invalid JSON: exec config must be an object")
        cmd = _check_str_list(body.get("Cmd"), "Cmd")
        if not cmd:
            raise InvalidParameter("No exec command specified")
        if (body.get("Tty") or body.get("AttachStdin")) and self.engine.isolation != "runc":
            raise InvalidParameter(f"exec -t and -i need runc isolation (this engine runs {self.engine.isolation})")
        if slot.c.state.status != "running" or slot.spawned is None:
            raise Conflict(f"Container {slot.c.id} is not running")
        inst = ExecInstance(id=secrets.token_hex(32), container_id=slot.c.id, cmd=cmd,
                            env=_check_str_list(body.get("Env"), "Env"),
                            working_dir=str(body.get("WorkingDir") or ""), tty=bool(body.get("Tty")),
                            attach_stdout=bool(body.get("AttachStdout", True)),
                            attach_stderr=bool(body.get("AttachStderr", True)),
                            attach_stdin=bool(body.get("AttachStdin")), user=str(body.get("User") or ""))
        self.instances[inst.id] = inst
        self._event(slot.c, f"exec_create: {' '.join(cmd)}", inst)
        return inst.id

    def get(self, exec_id: str) -> ExecInstance:
        inst = self.instances.get(exec_id)
        if inst is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return inst

    def forget(self, cid: str) -> None:
        """The container was removed: so are its exec instances."""
        for exec_id in [i.id for i in self.instances.values() if i.container_id == cid]:
            del self.instances[exec_id]
            handle = self.timers.pop(exec_id, None)
            if handle is not None:
                handle.cancel()

    def _event(self, c: Container, action: str, inst: ExecInstance, **extra: str) -> None:
        self.engine.events.emit("container", action, c.id,
                                {**c.label_attributes(), "execID": inst.id, **extra}, from_=c.image)

    def _env(self, c: Container, extra: list[str]) -> dict[str, str]:
        env = c.process_env()
        for item in extra:
            key, sep, value = item.partition("=")
            if sep:
                env[key] = value
        return env

    async def _spawn(self, c: Container, spawned: Spawned, argv: list[str], env: dict[str, str],
                     cwd: str, inst: ExecInstance | None = None) -> asyncio.subprocess.Process:
        from beacon.runtime._engine import find_executable

        exec_command = getattr(self.engine.backend, "exec_command", None)
        if exec_command is not None:  # runc: `runc exec`, checked against the container's rootfs
            tty = inst is not None and inst.tty
            full, host_env, host_cwd = exec_command(spawned, c, argv, env, cwd, inst.user if inst else "", tty)
            stdio: dict[str, Any] = {"stdin": asyncio.subprocess.DEVNULL, "stdout": asyncio.subprocess.PIPE,
                                     "stderr": asyncio.subprocess.PIPE}
            slave = -1
            if tty:
                assert inst is not None
                inst.console, slave = _stdio.open_console(*inst.size)
                stdio.update(stdin=slave, stdout=slave)
            elif inst is not None and inst.attach_stdin:
                stdio["stdin"] = asyncio.subprocess.PIPE
            try:
                return await asyncio.create_subprocess_exec(*full, **stdio, env=host_env, cwd=host_cwd,
                                                            start_new_session=True)
            finally:
                if slave >= 0:
                    os.close(slave)
        if not os.path.isdir(cwd):
            raise InvalidParameter(f"working directory {cwd!r} does not exist on the host")
        if not find_executable(argv[0], env["PATH"], cwd):
            raise InvalidParameter(f'OCI runtime exec failed: exec failed: unable to start container process: '
                                   f'exec: "{argv[0]}": executable file not found in $PATH: unknown')
        prefix = self.engine.backend.exec_prefix(spawned)
        return await asyncio.create_subprocess_exec(
            *prefix, *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, cwd=cwd, start_new_session=True)

    async def start(self, exec_id: str) -> AsyncIterator[tuple[int, bytes]]:
        """Run the exec instance; yields ``(stream, chunk)`` of its output until it exits."""
        inst = self.get(exec_id)
        if inst.started:
            raise Conflict(f"Exec {exec_id} has already started")
        slot = self.engine.resolve(inst.container_id)
        c, spawned = slot.c, slot.spawned
        if c.state.status != "running" or spawned is None:
            raise Conflict(f"Container {c.id} is not running")
        inst.started = inst.running = True
        self._event(c, f"exec_start: {' '.join(inst.cmd)}", inst)
        try:
            proc = await self._spawn(c, spawned, inst.cmd, self._env(c, inst.env),
                                     inst.working_dir or c.working_dir or "/", inst)
        except (InvalidParameter, OSError) as exc:
            inst.running, inst.exit_code = False, 127 if "not found" in str(exc) else 126
            self._event(c, "exec_die", inst, exitCode=str(inst.exit_code))
            self._expire(inst.id)
            yield 2, (str(exc) + "\r\n").encode()
            return
        inst.proc, inst.pid = proc, proc.pid
        queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()

        async def pump(stream: asyncio.StreamReader | None, sid: int, wanted: bool) -> None:
            assert stream is not None
            while chunk := await stream.read(65536):
                if wanted:
                    queue.put_nowait((sid, chunk))
            queue.put_nowait(None)

        async def pump_console() -> None:
            async for chunk in _stdio.read_fd(inst.console):
                queue.put_nowait((1, chunk))
            queue.put_nowait(None)

        if inst.console >= 0:
            # runc's own stderr (errors before the process runs) still comes through the pipe
            pumps = [asyncio.create_task(pump_console()), asyncio.create_task(pump(proc.stderr, 2, True))]
        else:
            pumps = [asyncio.create_task(pump(proc.stdout, 1, inst.attach_stdout)),
                     asyncio.create_task(pump(proc.stderr, 2, inst.attach_stderr))]
        if inst.attach_stdin:
            pumps.append(asyncio.create_task(self._feed(inst, proc)))
        try:
            ended = 0
            while ended < 2:
                item = await queue.get()
                if item is None:
                    ended += 1
                else:
                    yield item
            await proc.wait()
        finally:
            for task in pumps:
                task.cancel()
            if proc.returncode is None:
                _killpg(proc.pid)
                await proc.wait()
            if inst.console >= 0:
                os.close(inst.console)
                inst.console = -1
            code = proc.returncode if proc.returncode is not None else 255
            inst.running, inst.exit_code = False, (128 - code if code < 0 else code)
            self._event(c, "exec_die", inst, exitCode=str(inst.exit_code))
            self._expire(inst.id)

    async def _feed(self, inst: ExecInstance, proc: asyncio.subprocess.Process) -> None:
        if inst.console >= 0:
            master = inst.console
            await _stdio.feed(inst.stdin, lambda b: _stdio.write_fd(master, b), lambda: None)
            return
        writer = proc.stdin
        if writer is None:
            return

        async def write(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        try:
            await _stdio.feed(inst.stdin, write, writer.close)
        except (ConnectionError, BrokenPipeError):
            pass

    def resize(self, exec_id: str, rows: int, cols: int) -> None:
        inst = self.get(exec_id)
        inst.size = (rows or inst.size[0], cols or inst.size[1])
        if inst.proc is not None and inst.console >= 0:
            _stdio.resize(inst.console, inst.proc.pid, *inst.size)

    def _expire(self, exec_id: str) -> None:
        """A finished exec stays inspectable for EXEC_KEEP seconds (clients read its exit code right
        after the stream ends), then goes, so periodic docker-exec checks do not grow the table."""
        handle = asyncio.get_running_loop().call_later(EXEC_KEEP, self._drop, exec_id)
        self.timers[exec_id] = handle

    def _drop(self, exec_id: str) -> None:
        self.instances.pop(exec_id, None)
        self.timers.pop(exec_id, None)

    def start_detached(self, exec_id: str) -> None:
        async def drain() -> None:
            async for _ in self.start(exec_id):
                pass

        self.get(exec_id)
        task = asyncio.create_task(drain())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run_captured(self, c: Container, spawned: Spawned, argv: list[str], timeout: float,
                           cap: int) -> tuple[int, str]:
        """Run a probe; returns its exit code and first ``cap`` bytes of output. A probe that times
        out is killed and awaited, so probes never overlap."""
        try:
            proc = await self._spawn(c, spawned, argv, c.process_env(), c.working_dir or "/")
        except (InvalidParameter, OSError) as exc:
            return 127, str(exc)
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate()
        except TimeoutError:
            _killpg(proc.pid)
            await proc.wait()
            return -1, f"Health check exceeded timeout ({timeout:g}s)"
        code = proc.returncode if proc.returncode is not None else 255
        return code, (out + err)[:cap].decode("utf-8", errors="replace")

    def inspect(self, exec_id: str) -> dict[str, Any]:
        inst = self.get(exec_id)
        return {"ID": inst.id, "ContainerID": inst.container_id, "Running": inst.running,
                "ExitCode": inst.exit_code, "Pid": inst.pid, "OpenStdin": inst.attach_stdin, "OpenStdout": inst.attach_stdout,
                "OpenStderr": inst.attach_stderr, "CanRemove": False, "DetachKeys": "",
                "ProcessConfig": {"tty": inst.tty, "entrypoint": inst.cmd[0], "arguments": inst.cmd[1:],
                                  "privileged": False, "user": ""}}

    async def container_exited(self, cid: str) -> None:
        """A container stopped: its execs die with it (in netns mode the kernel already did that)."""
        for inst in list(self.instances.values()):
            if inst.container_id == cid and inst.proc is not None and inst.proc.returncode is None:
                _killpg(inst.proc.pid)

    async def close(self) -> None:
        for inst in self.instances.values():
            if inst.proc is not None and inst.proc.returncode is None:
                _killpg(inst.proc.pid)
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for handle in self.timers.values():
            handle.cancel()
        self.timers.clear()


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
