"""One Beacon agent process: wires the state machine, consensus, local state, checks, HTTP API, DNS
and (in -dev) the embedded container engine, and starts/stops them in order."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from typing import Any

from aiohttp import web

from beacon.agent.http import agent_api, catalog, event, health, kv, session, snapshot, status, txn
from beacon.agent.http.core import AGENT_KEY, HTTPError, error_middleware
from beacon.agent.http.decode import Fields
from beacon.agent.local import LocalState
from beacon.config import AgentConfig
from beacon.durations import format_duration
from beacon.model import (
    SERF_ALIVE_OUTPUT,
    SERF_CHECK_ID,
    SERF_CHECK_NAME,
    HealthCheck,
    Service,
)
from beacon.server import sessions
from beacon.server.consensus import Consensus, SingleServer
from beacon.server.fsm import ApplyResult, Command, MessageType, StateStore
from beacon.server.leader import SessionReaper
from beacon.server.watch import WatchHub

log = logging.getLogger("beacon.agent")

SCRIPTS_DISABLED = ("Scripts are disabled on this agent from remote calls; to enable, configure "
                    "'enable_script_checks' to true")
SCRIPTS_DISABLED_LOCAL = ("Scripts are disabled on this agent; to enable, configure 'enable_script_checks' "
                          "or 'enable_local_script_checks' to true")


class CheckError(Exception):
    """An invalid check definition (400 over HTTP, a start-up error from config)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _load_node_id(data_dir: str) -> str:
    if not data_dir:
        return str(uuid.uuid4())
    path = os.path.join(data_dir, "node-id")
    try:
        with open(path, encoding="utf-8") as f:
            value = f.read().strip()
        uuid.UUID(value)
        return value
    except (OSError, ValueError):
        value = str(uuid.uuid4())
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(value)
        return value


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.node_id = _load_node_id(config.data_dir)
        self.hub = WatchHub()
        self.store = StateStore(on_change=self.hub.notify_threadsafe)
        sessions.install(self.store)
        self.events = event.EventBuffer()
        self.session_reaper: SessionReaper | None = None
        self.consensus: Consensus = SingleServer(
            self.store, f"{config.advertise}:{config.server_port}", self.node_id, config.node_name,
            config.data_dir or None)
        self.local = LocalState(
            node=config.node_name, node_id=self.node_id, address=config.advertise,
            datacenter=config.datacenter, node_meta=config.node_meta, submit=self.submit,
            data_dir=config.data_dir or None, check_update_interval=config.check_update_interval)
        self.local.store = self.store  # type: ignore[attr-defined]
        self.http_port: int | None = None
        self.dns_port: int | None = None
        self._runner: web.AppRunner | None = None
        self._dns: Any = None
        self.shutdown_requested = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.hub.bind(asyncio.get_running_loop())
        await self.consensus.start()
        await self._register_self()
        await self._restore_local()
        self.local.start()
        await self.local.sync_changes()
        if self.config.server:
            self.session_reaper = SessionReaper(self.store, self.submit, self.consensus.is_leader,
                                                max_sleep=min(1.0, self.config.session_ttl_min / 4))
            self.session_reaper.start()
        if self.config.http_port >= 0:
            await self._start_http()
        if self.config.dns_port >= 0:
            await self._start_dns()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._dns is not None:
            await self._dns.stop()
            self._dns = None
        await self.local.stop()
        if self.session_reaper is not None:
            await self.session_reaper.stop()
            self.session_reaper = None
        for task in list(self._tasks):
            task.cancel()
        await self.consensus.stop()

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _register_self(self) -> None:
        """A server's own node carries serfHealth and the `consul` service (port 8300), as in Consul."""
        cfg = self.config
        payload: dict[str, Any] = {
            "node": cfg.node_name, "id": self.node_id, "address": cfg.advertise,
            "datacenter": cfg.datacenter, "node_meta": dict(cfg.node_meta),
            "checks": [HealthCheck(node=cfg.node_name, check_id=SERF_CHECK_ID, name=SERF_CHECK_NAME,
                                   status="passing", output=SERF_ALIVE_OUTPUT).to_dict()],
        }
        if cfg.server:
            payload["service"] = Service(id="consul", service="consul", port=cfg.server_port).to_dict()
        await self.submit((MessageType.REGISTER, payload))
        self.local.node_in_sync = True

    async def _restore_local(self) -> None:
        services, checks = self.local.load_persisted()
        for svc in services:
            self.local.add_service(svc, source="api", persist=False)
        for chk, definition in checks:
            try:
                self.local.add_check(chk, definition, source="api", persist=False)
            except KeyError:
                log.warning("dropping persisted check %s: its service %s is gone", chk.check_id, chk.service_id)
                continue
            self._start_runner(chk.check_id)
        for obj in self.config.services:
            from beacon.agent.http.decode import decode_service

            svc, check_objs = decode_service(obj)
            await self.register_service(svc, check_objs, source="config", sync=False)
        for obj in self.config.checks:
            await self.register_check(obj, source="config", sync=False)

    async def _start_http(self) -> None:
        app = web.Application(middlewares=[error_middleware], client_max_size=16 * 1024 * 1024)
        app[AGENT_KEY] = self
        for module in (agent_api, catalog, health, kv, status, session, txn, event, snapshot):
            module.router.install(app)
        app.router.add_get("/", self._root)
        # Blocking queries can be parked for minutes: on shutdown, give handlers a moment, then cancel.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = bind_tcp(self.config.http_bind, self.config.http_port)
        self.http_port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def _root(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="Consul Agent")

    async def _start_dns(self) -> None:
        try:
            from beacon.dns import DNSConfig, DNSServer
        except ImportError:
            log.warning("DNS interface not available in this build")
            return
        cfg = self.config
        dns_cfg = DNSConfig.from_consul_json(cfg.dns_config, domain=cfg.domain, datacenter=cfg.datacenter,
                                             node_name=cfg.node_name, recursors=cfg.recursors)
        self._dns = DNSServer(self.store, dns_cfg)
        udp_port, _ = await self._dns.start(cfg.dns_bind, cfg.dns_port)
        self.dns_port = udp_port

    # ------------------------------------------------------------------ writes
    async def submit(self, command: Command) -> ApplyResult:
        return await self.consensus.submit(command)

    async def sync_now(self) -> None:
        """Best-effort synchronous sync after an agent write (failures are retried by anti-entropy)."""
        try:
            await self.local.sync_changes()
        except Exception as exc:
            log.warning("sync after local change failed (anti-entropy will retry): %s", exc)

    # ------------------------------------------------------------------ services and checks
    async def register_service(self, svc: Service, check_objs: list[dict[str, Any]], source: str = "api",
                               replace_existing_checks: bool = False, sync: bool = True) -> None:
        built = []
        for i, obj in enumerate(check_objs):
            built.append(self.build_check(obj, source, service=svc, position=i + 1, total=len(check_objs)))
        existing = [cid for cid, c in self.local.live_checks().items() if c.service_id == svc.id]
        self.local.add_service(svc, source=source)
        new_ids = set()
        for chk, definition in built:
            self.local.add_check(chk, definition, source=source)
            self._start_runner(chk.check_id)
            new_ids.add(chk.check_id)
        if replace_existing_checks:
            for cid in existing:
                if cid not in new_ids:
                    self._stop_runner(cid)
                    self.local.remove_check(cid)
        if sync:
            await self.sync_now()

    async def deregister_service(self, service_id: str) -> None:
        removed = self.local.remove_service(service_id)
        for cid in removed:
            self._stop_runner(cid)
        await self.sync_now()

    async def register_check(self, obj: dict[str, Any], source: str = "api", sync: bool = True) -> None:
        service = None
        sid = Fields(obj).str("ServiceID")
        if sid:
            service = self.local.live_services().get(sid)
            if service is None:
                raise HTTPError(404, f'ServiceID "{sid}" does not exist')
        chk, definition = self.build_check(obj, source, service=service, position=0, total=1,
                                           standalone=True)
        self.local.add_check(chk, definition, source=source)
        self._start_runner(chk.check_id)
        if sync:
            await self.sync_now()

    async def deregister_check(self, check_id: str) -> None:
        self.local.remove_check(check_id)
        self._stop_runner(check_id)
        await self.sync_now()

    async def ttl_update(self, check_id: str, status: str, output: str) -> None:
        entry = self.local.checks.get(check_id)
        if entry is None or entry.deleted:
            raise KeyError(check_id)
        if entry.check.type != "ttl":
            raise TypeError(check_id)
        self._ttl_touch(check_id, status, output)
        self.local.update_check(check_id, status, output)
        await self.sync_now()

    def build_check(self, obj: dict[str, Any], source: str, service: Service | None, position: int,
                    total: int, standalone: bool = False) -> tuple[HealthCheck, dict[str, Any]]:
        """Decode and validate one check definition; raise HTTPError(400/500) with Consul's message."""
        f = Fields(obj, "check")
        is_script = f.has("Args", "ScriptArgs", "Script") or f.has("DockerContainerID")
        if is_script:
            if source == "api" and not self.config.enable_script_checks:
                raise HTTPError(500, SCRIPTS_DISABLED)
            if source == "config" and not (self.config.enable_script_checks
                                           or self.config.enable_local_script_checks):
                raise HTTPError(500, SCRIPTS_DISABLED_LOCAL)
        status = f.str("Status") or "critical"
        if status not in ("passing", "warning", "critical"):
            raise HTTPError(400, "Status for checks must 'passing', 'warning', 'critical'")
        if service is not None and not standalone:
            default_id = f"service:{service.id}" if total == 1 else f"service:{service.id}:{position}"
            check_id = f.str("CheckID", "ID") or default_id
            name = f.str("Name") or f"Service '{service.service}' check"
        else:
            name = f.str("Name")
            check_id = f.str("CheckID", "ID") or name
        ttl = f.duration("TTL")
        interval = f.duration("Interval")
        timeout = f.duration("Timeout")
        if ttl is not None and interval is not None:
            raise HTTPError(400, "Invalid check: Interval and TTL cannot both be specified")
        kind = self._check_kind(f, ttl)
        if kind in ("script", "http", "tcp", "udp", "docker") and not interval:
            raise HTTPError(400, "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, "
                                 "UDP or OSService checks")
        if kind == "ttl" and not ttl:
            raise HTTPError(400, "Invalid check: TTL must be > 0 for TTL checks")
        if kind == "alias" and interval:
            raise HTTPError(400, "Invalid check: Interval cannot be set for Alias checks")
        if kind == "unknown" and not standalone and service is not None and not obj:
            raise HTTPError(400, "Invalid check: no check type given")
        definition = {k: v for k, v in obj.items()}
        chk = HealthCheck(
            node=self.config.node_name, check_id=check_id, name=name, status=status, notes=f.str("Notes"),
            service_id=service.id if service is not None else "", type=kind if kind != "unknown" else "",
            interval=format_duration(interval) if interval else "",
            timeout=format_duration(timeout) if timeout else "",
            definition=self._definition_json(f, interval, timeout, ttl),
        )
        return chk, definition

    @staticmethod
    def _check_kind(f: Fields, ttl: float | None) -> str:
        if ttl is not None:
            return "ttl"
        if f.has("DockerContainerID"):
            return "docker"
        if f.has("Args", "ScriptArgs", "Script"):
            return "script"
        for key, kind in (("HTTP", "http"), ("TCP", "tcp"), ("UDP", "udp"), ("GRPC", "grpc"),
                          ("AliasService", "alias"), ("AliasNode", "alias"), ("H2PING", "h2ping")):
            if f.has(key):
                return kind
        return "unknown"

    @staticmethod
    def _definition_json(f: Fields, interval: float | None, timeout: float | None,
                         ttl: float | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("HTTP", "TCP", "UDP", "Method"):
            if f.has(key):
                out[key] = f.get(key)
        if f.has("Header"):
            out["Header"] = f.get("Header")
        if interval:
            out["Interval"] = format_duration(interval)
        if timeout:
            out["Timeout"] = format_duration(timeout)
        if ttl:
            out["TTL"] = format_duration(ttl)
        dcsa = f.duration("DeregisterCriticalServiceAfter")
        out["DeregisterCriticalServiceAfter"] = format_duration(dcsa or 0)
        return out

    # Runner hooks: the check scheduler plugs in here.
    def _start_runner(self, check_id: str) -> None:
        pass

    def _stop_runner(self, check_id: str) -> None:
        pass

    def _ttl_touch(self, check_id: str, status: str, output: str) -> None:
        pass

    # ------------------------------------------------------------------ membership
    def members(self) -> list[dict[str, Any]]:
        cfg = self.config
        tags = {"role": "consul" if cfg.server else "node", "dc": cfg.datacenter, "id": self.node_id,
                "vsn": "2", "vsn_min": "2", "vsn_max": "3", "build": "beacon", "segment": ""}
        if cfg.server:
            tags.update(port=str(cfg.server_port), expect=str(cfg.bootstrap_expect or 1), raft_vsn="3")
        return [{"Name": cfg.node_name, "Addr": cfg.advertise, "Port": 8301, "Tags": tags, "Status": 1,
                 "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2, "DelegateMin": 2, "DelegateMax": 5,
                 "DelegateCur": 4}]

    async def join(self, address: str) -> None:
        raise HTTPError(500, f"Failed to join {address}: this agent runs a single-server cluster")

    def request_leave(self) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, self.shutdown_requested.set)

    async def force_leave(self, node: str, prune: bool = False) -> None:
        if node == self.config.node_name or self.store.get_node(node) is None:
            raise HTTPError(500, f"agent: No node found with name '{node}'")
        await self.submit((MessageType.DEREGISTER, {"node": node}))

    async def reload(self) -> None:
        raise HTTPError(500, "reload is not supported yet")
