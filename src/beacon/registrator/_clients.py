"""The registrator's two HTTP clients: the Docker Engine API (unix socket or tcp) and a
Consul-compatible agent API (``consul://host:port``, ``consul-unix:///path.sock``, ``http://...``).

Both translate transport and HTTP errors into :class:`DockerError` / :class:`RegistryError`
(``status`` 0 means "could not reach it"), with ``raise ... from``.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import aiohttp

__all__ = ["ConsulClient", "DockerClient", "DockerError", "RegistryError", "parse_registry_uri"]


class DockerError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RegistryError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _connector(socket_path: str | None) -> aiohttp.BaseConnector:
    if socket_path is not None:
        return aiohttp.UnixConnector(path=socket_path, limit=32)
    return aiohttp.TCPConnector(limit=32)


class DockerClient:
    """Just the calls the registrator needs: ping, list, inspect and the event stream."""

    def __init__(self, docker_host: str) -> None:
        self.docker_host = docker_host
        if docker_host.startswith("unix://"):
            self._socket: str | None = docker_host[len("unix://"):]
            self._base = "http://docker"
        elif docker_host.startswith(("tcp://", "http://")):
            self._socket = None
            self._base = "http://" + docker_host.split("://", 1)[1].rstrip("/")
        else:
            raise ValueError(f"unsupported docker host {docker_host!r} (want unix:///path or tcp://host:port)")
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=_connector(self._socket), trust_env=False,
                                                  cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _json(self, path: str, params: dict[str, str] | None = None, timeout: float = 10.0) -> Any:
        try:
            async with self._client().get(self._base + path, params=params,
                                          timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise DockerError(resp.status, _message(raw) or f"HTTP {resp.status}")
                return json.loads(raw) if raw.strip() else None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DockerError(0, f"cannot reach the Docker API at {self.docker_host}: {exc or type(exc).__name__}") \
                from exc

    async def ping(self) -> None:
        await self._json("/version")

    async def containers(self, all_: bool = False) -> list[dict[str, Any]]:
        return list(await self._json("/containers/json", {"all": "1" if all_ else "0"}) or [])

    async def inspect(self, ref: str) -> dict[str, Any] | None:
        """The inspect object, or None when the container is gone."""
        try:
            return dict(await self._json(f"/containers/{quote(ref, safe='')}/json"))
        except DockerError as exc:
            if exc.status == 404:
                return None
            raise

    async def events(self, since: int | None = None,
                     on_connect: Callable[[], None] | None = None) -> AsyncIterator[dict[str, Any]]:
        """Container events, live, until the stream ends (a DockerError then says why).

        ``on_connect`` runs once the daemon has answered, i.e. once no later event can be missed."""
        filters = {"type": ["container"], "event": ["start", "die", "stop", "destroy", "health_status"]}
        params = {"filters": json.dumps(filters)}
        if since is not None:
            params["since"] = str(since)
        try:
            async with self._client().get(self._base + "/events", params=params,
                                          timeout=aiohttp.ClientTimeout(total=None, sock_connect=5)) as resp:
                if resp.status >= 400:
                    raise DockerError(resp.status, _message(await resp.read()) or f"HTTP {resp.status}")
                if on_connect is not None:
                    on_connect()
                buf = b""
                async for chunk in resp.content.iter_any():
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        if line.strip():
                            try:
                                yield json.loads(line)
                            except ValueError:
                                continue
        except (aiohttp.ClientError, OSError) as exc:
            raise DockerError(0, f"Docker event stream from {self.docker_host} failed: {exc}") from exc
        raise DockerError(0, f"Docker event stream from {self.docker_host} closed")


def _message(raw: bytes) -> str:
    try:
        return str(json.loads(raw)["message"])
    except (ValueError, KeyError, TypeError):
        return raw.decode(errors="replace").strip()


def parse_registry_uri(uri: str) -> tuple[str | None, str]:
    """``consul://host:port`` -> (None, "http://host:port"); ``consul-unix:///p.sock`` -> ("/p.sock", ...)."""
    if not uri:
        addr = os.environ.get("CONSUL_HTTP_ADDR", "127.0.0.1:8500")
        uri = addr if "://" in addr else "consul://" + addr
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise ValueError(f"registry URI {uri!r} has no scheme (want consul://host:port)")
    if scheme in ("consul", "http"):
        return None, "http://" + (rest.rstrip("/") or "127.0.0.1:8500")
    if scheme in ("consul-tls", "https"):
        return None, "https://" + (rest.rstrip("/") or "127.0.0.1:8501")
    if scheme == "consul-unix":
        if not rest.startswith("/"):
            raise ValueError(f"registry URI {uri!r}: consul-unix needs an absolute socket path")
        return rest, "http://consul"
    raise ValueError(f"unsupported registry {scheme!r}: Beacon's registrator speaks the Consul agent API "
                     "(consul://, consul-tls://, consul-unix://)")


class ConsulClient:
    """The Consul agent endpoints the registrator uses. Token from CONSUL_HTTP_TOKEN."""

    def __init__(self, uri: str, token: str | None = None, timeout: float = 10.0) -> None:
        self._socket, self.base = parse_registry_uri(uri)
        self.uri = uri
        self.token = token if token is not None else os.environ.get("CONSUL_HTTP_TOKEN", "")
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"X-Consul-Token": self.token} if self.token else {}
            self._session = aiohttp.ClientSession(connector=_connector(self._socket), headers=headers,
                                                  trust_env=False, cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        try:
            async with self._client().request(method, self.base + path, json=body, params=params,
                                              timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise RegistryError(resp.status, f"{method} {path}: {resp.status} "
                                                     f"{raw.decode(errors='replace').strip()}")
                return json.loads(raw) if raw.strip() else None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RegistryError(0, f"cannot reach the registry at {self.base}: {exc or type(exc).__name__}") \
                from exc

    async def leader(self) -> str:
        return str(await self._call("GET", "/v1/status/leader") or "")

    async def agent_self(self) -> dict[str, Any]:
        return dict(await self._call("GET", "/v1/agent/self") or {})

    async def services(self) -> dict[str, dict[str, Any]]:
        return dict(await self._call("GET", "/v1/agent/services") or {})

    async def checks(self) -> dict[str, dict[str, Any]]:
        return dict(await self._call("GET", "/v1/agent/checks") or {})

    async def register(self, body: dict[str, Any]) -> None:
        # replace-existing-checks: checks the container no longer declares go away with the update.
        await self._call("PUT", "/v1/agent/service/register", body, {"replace-existing-checks": "true"})

    async def deregister(self, service_id: str) -> None:
        try:
            await self._call("PUT", f"/v1/agent/service/deregister/{quote(service_id, safe='')}")
        except RegistryError as exc:
            if exc.status != 404:  # already gone is what we wanted
                raise

    async def maintenance(self, service_id: str, enable: bool, reason: str = "") -> None:
        await self._call("PUT", f"/v1/agent/service/maintenance/{quote(service_id, safe='')}",
                         params={"enable": "true" if enable else "false", "reason": reason})

    async def update_check(self, check_id: str, status: str, output: str) -> None:
        await self._call("PUT", f"/v1/agent/check/update/{quote(check_id, safe='')}",
                         {"Status": status, "Output": output})
