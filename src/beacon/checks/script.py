"""Script checks: run ``Args`` on this host (exit 0 passing, 1 warning, anything else critical)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from beacon.checks.durations import format_duration
from beacon.checks.output import TailBuffer
from beacon.checks.probe import ProbeResult
from beacon.checks.status import CRITICAL, PASSING, WARNING

__all__ = ["ScriptProbe", "exit_code_status"]


def exit_code_status(code: int) -> str:
    """Nagios convention, as Consul applies it: 0 passing, 1 warning, anything else critical."""
    if code == 0:
        return PASSING
    if code == 1:
        return WARNING
    return CRITICAL


class ScriptProbe:
    """Runs a command in its own session and captures combined stdout/stderr (tail kept).

    On timeout or cancellation the whole process group is killed and then awaited, so a run never
    outlives its slot and two runs of one check never overlap.
    """

    def __init__(self, argv: list[str], timeout: float, output_max_size: int) -> None:
        self.argv = list(argv)
        self.timeout = timeout
        self.output_max_size = output_max_size

    async def run(self) -> ProbeResult:
        buf = TailBuffer(self.output_max_size)
        # The process exists before create_subprocess_exec returns (it still awaits the pipes). A
        # cancellation in that window would leave the script's children running, so creation is
        # shielded and, if we are cancelled meanwhile, the group is killed as soon as it exists.
        creating = asyncio.ensure_future(asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True))
        try:
            proc = await asyncio.shield(creating)
        except asyncio.CancelledError:
            creating.add_done_callback(_kill_when_created)
            raise
        except OSError as exc:
            return CRITICAL, f"Failed to invoke check: {exc}"
        try:
            async with asyncio.timeout(self.timeout):
                assert proc.stdout is not None
                while chunk := await proc.stdout.read(65536):
                    buf.write(chunk)
                code = await proc.wait()
        except TimeoutError:
            await _kill_group(proc)
            msg = f"Timed out ({format_duration(self.timeout)}) running check"
            output = buf.render()
            return CRITICAL, f"{msg}\n\n{output}" if output else msg
        except BaseException:
            # Cancelled (check removed, scheduler stopping): leave nothing running.
            await _kill_group(proc)
            raise
        return exit_code_status(code), buf.render()

    async def close(self) -> None:
        return None


def _kill_when_created(creating: asyncio.Future[asyncio.subprocess.Process]) -> None:
    if creating.cancelled() or creating.exception() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(creating.result().pid, signal.SIGKILL)  # the loop's child watcher reaps it


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the process group the script leads (its children included), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()  # in case the script left its group
    await proc.wait()
