"""Docker checks: run ``Args`` inside a container through the Docker Engine API exec calls.

One run is three requests, as ``docker exec`` makes them:

1. ``POST /containers/{id}/exec`` with ``Cmd``, stdout and stderr attached, no TTY -> exec ID;
2. ``POST /exec/{exec_id}/start`` -> the output as a multiplexed stream (8-byte frame headers,
   since no TTY was asked for);
3. ``GET /exec/{exec_id}/json`` -> ``ExitCode`` (0 passing, 1 warning, else critical).

The engine is reached at ``docker_host`` (``unix:///path/docker.sock``, or ``tcp://host:port``);
it is the embedded Beacon engine or a real dockerd. API errors become critical results whose
output says what failed. A run that times out is abandoned (the Engine API has no call to kill an
exec'd process); the request is cancelled and the check goes critical.
"""

from __future__ import annotations

import asyncio
import os
import struct
from urllib.parse import quote

import aiohttp

from beacon.checks.durations import format_duration
from beacon.checks.output import TailBuffer
from beacon.checks.probe import ProbeResult
from beacon.checks.script import exit_code_status
from beacon.checks.status import CRITICAL

__all__ = ["DEFAULT_DOCKER_HOST", "DockerError", "DockerExecClient", "DockerProbe", "default_docker_host"]

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
_FRAME = struct.Struct(">BxxxL")


class DockerError(Exception):
    """A Docker Engine API call failed; the message is what the check reports."""


def default_docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


class DockerExecClient:
    """A minimal asynchronous Docker Engine API client for exec (one session, created lazily)."""

    def __init__(self, docker_host: str | None = None, *, connector_limit: int = 64) -> None:
        self.docker_host = docker_host or default_docker_host()
        self._connector_limit = connector_limit
        self._session: aiohttp.ClientSession | None = None
        if self.docker_host.startswith("unix://"):
            self._socket_path: str | None = self.docker_host[len("unix://"):]
            self._base = "http://docker"
        elif self.docker_host.startswith(("tcp://", "http://")):
            self._socket_path = None
            self._base = "http://" + self.docker_host.split("://", 1)[1].rstrip("/")
        else:
            raise ValueError(f"unsupported docker host {self.docker_host!r} (want unix:// or tcp://)")

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector: aiohttp.BaseConnector
            if self._socket_path is not None:
                connector = aiohttp.UnixConnector(path=self._socket_path, limit=self._connector_limit)
            else:
                connector = aiohttp.TCPConnector(limit=self._connector_limit)
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def create_exec(self, container_id: str, cmd: list[str]) -> str:
        body = {"AttachStdin": False, "AttachStdout": True, "AttachStderr": True, "Tty": False, "Cmd": cmd}
        url = f"{self._base}/containers/{quote(container_id, safe='')}/exec"
        async with self._client().post(url, json=body) as resp:
            data = await _json(resp)
            exec_id = data.get("Id")
            if resp.status in (200, 201) and isinstance(exec_id, str):
                return exec_id
            if resp.status == 404:
                raise DockerError(f"create exec failed for unknown container {container_id}")
            if resp.status == 409:
                raise DockerError(f"create exec failed since container {container_id} is paused or stopped")
            raise DockerError(f"create exec failed for container {container_id} with status "
                              f"{resp.status}: {_message(data)}")

    async def start_exec(self, container_id: str, exec_id: str, sink: TailBuffer) -> None:
        url = f"{self._base}/exec/{quote(exec_id, safe='')}/start"
        async with self._client().post(url, json={"Detach": False, "Tty": False}) as resp:
            if resp.status != 200:
                data = await _json(resp)
                if resp.status == 404:
                    raise DockerError(f"start exec failed for container {container_id}: "
                                      f"invalid exec id {exec_id}")
                if resp.status == 409:
                    raise DockerError(f"start exec failed since container {container_id} "
                                      "is paused or stopped")
                raise DockerError(f"start exec failed for container {container_id} with status "
                                  f"{resp.status}: {_message(data)}")
            await _demux(resp.content, sink)

    async def inspect_exec(self, container_id: str, exec_id: str) -> int:
        url = f"{self._base}/exec/{quote(exec_id, safe='')}/json"
        async with self._client().get(url) as resp:
            data = await _json(resp)
            code = data.get("ExitCode")
            if resp.status == 200 and isinstance(code, int):
                return code
            if resp.status == 404:
                raise DockerError(f"inspect exec failed for container {container_id}: "
                                  f"invalid exec id {exec_id}")
            raise DockerError(f"inspect exec failed for container {container_id} with status "
                              f"{resp.status}: {_message(data)}")

    async def run(self, container_id: str, cmd: list[str], sink: TailBuffer) -> int:
        """Create, start and inspect one exec; return its exit code (output goes to ``sink``)."""
        exec_id = await self.create_exec(container_id, cmd)
        await self.start_exec(container_id, exec_id, sink)
        return await self.inspect_exec(container_id, exec_id)


async def _demux(stream: aiohttp.StreamReader, sink: TailBuffer) -> None:
    """Copy a multiplexed exec stream (stdout and stderr frames) into ``sink``.

    A stream that does not start with a frame header (an engine that answers raw, as with a TTY)
    is copied as it is.
    """
    while True:
        try:
            header = await stream.readexactly(_FRAME.size)
        except asyncio.IncompleteReadError as exc:
            sink.write(exc.partial)
            return
        if header[0] not in (0, 1, 2) or header[1:4] != b"\0\0\0":
            sink.write(header)
            while chunk := await stream.read(65536):
                sink.write(chunk)
            return
        _, size = _FRAME.unpack(header)
        while size:
            chunk = await stream.read(min(size, 65536))
            if not chunk:
                return
            sink.write(chunk)
            size -= len(chunk)


async def _json(resp: aiohttp.ClientResponse) -> dict[str, object]:
    try:
        data = await resp.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        return {}
    return data if isinstance(data, dict) else {}


def _message(data: dict[str, object]) -> str:
    msg = data.get("message")
    return msg if isinstance(msg, str) else "unknown error"


class DockerProbe:
    def __init__(self, client: DockerExecClient, container_id: str, cmd: list[str], timeout: float,
                 output_max_size: int) -> None:
        self.client = client
        self.container_id = container_id
        self.cmd = cmd
        self.timeout = timeout
        self.output_max_size = output_max_size

    async def run(self) -> ProbeResult:
        buf = TailBuffer(self.output_max_size)
        try:
            async with asyncio.timeout(self.timeout):
                code = await self.client.run(self.container_id, self.cmd, buf)
        except TimeoutError:
            msg = f"Timed out ({format_duration(self.timeout)}) running check"
            output = buf.render()
            return CRITICAL, f"{msg}\n\n{output}" if output else msg
        except DockerError as exc:
            return CRITICAL, str(exc)
        except (aiohttp.ClientError, OSError) as exc:
            return CRITICAL, f"Docker API request to {self.client.docker_host} failed: {exc}"
        return exit_code_status(code), buf.render()

    async def close(self) -> None:
        return None
