"""One Beacon agent process: wires the state machine, consensus, local state, checks, HTTP API, DNS
and (in -dev) the embedded container engine, and starts/stops them in order."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import socket
import tempfile
import uuid
from typing import Any

from aiohttp import web

from beacon import telemetry
from beacon.agent import security
from beacon.agent.http import (
    agent_api,
    catalog,
    config,
    connect,
    event,
    health,
    kv,
    limits,
    metrics,
    monitor,
    operator,
    query,
    session,
    snapshot,
    status,
    txn,
    ui,
)
from beacon.agent.http.core import AGENT_KEY
from beacon.agent.local import LocalState
from beacon.agent.servers import EtcdBootstrap
from beacon.config import AgentConfig
from beacon.endpoints.agent import LocalAgent
from beacon.errors import Failed
from beacon.model import (
    SERF_ALIVE_OUTPUT,
    SERF_CHECK_ID,
    SERF_CHECK_NAME,
    HealthCheck,
    Service,
)
from beacon.server import commands as cmd
from beacon.server import gcpause, looplag, sessions
from beacon.server.commands import Record
from beacon.server.consensus import Consensus, NoLeaderError, SingleServer
from beacon.server.fsm import ApplyResult, Command, StateStore
from beacon.server.leader import SessionReaper
from beacon.server.watch import WatchHub

log = logging.getLogger("beacon.agent")

def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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


DEV_ENGINE_DIR = "/tmp/beacon-dev"  # -dev's engine (and the docker CLI's DOCKER_HOST in the README)


class ListenError(OSError):
    """A listener could not be opened; the message names the listener, the address and the port."""


def bind_tcp(host: str, port: int, listener: str = "HTTP API") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError(exc.errno, listen_error(listener, "tcp", host, port, exc)) from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def listen_error(listener: str, proto: str, host: str, port: int, exc: OSError) -> str:
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    reason = (exc.strerror or str(exc)).lower()
    hint = ""
    if exc.errno == errno.EADDRINUSE:
        hint = f" (another process listens there: choose another port or stop it; `ss -ltnup | grep :{port}` shows it)"
    elif exc.errno == errno.EADDRNOTAVAIL:
        hint = " (no interface of this host has that address)"
    return f"cannot listen on {where}/{proto} for the {listener}: {reason}{hint}"


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.node_id = _load_node_id(config.data_dir)
        self.hub = WatchHub()
        gcpause.install_freezer()  # no full collection walks the whole catalog (beacon.server.gcpause)
        self.store = StateStore(on_change=self.hub.notify_threadsafe)
        telemetry.bind_store(self.store)
        telemetry.bind_hub(self.hub)
        sessions.install(self.store)  # before any replay: the log holds session and txn commands
        security.setup(self)  # self.tls, self.acl (None with ACLs off), self.https_port
        self.events = event.EventBuffer()
        self.session_reaper: SessionReaper | None = None
        self.tombstone_reaper: Any = None
        self.leaf_certs: dict[str, dict[str, Any]] = {}  # Connect leaf certificates by service (agent/http/connect.py)
        self.raft: Any = None  # EtcdConsensus once a cluster server's etcd log is running
        self.etcd_member: Any = None  # the etcd process a cluster server supervises
        self.etcd_initial: tuple[str, str, str] | None = None  # how that member was first started
        self.cluster: Any = None
        self.consensus: Consensus = self._make_consensus()
        self.local = LocalState(
            node=config.node_name, node_id=self.node_id, address=config.advertise,
            datacenter=config.datacenter, node_meta=config.node_meta, submit=self.submit,
            data_dir=config.data_dir or None, check_update_interval=config.check_update_interval)
        self.local.fetch_remote = self._fetch_node_state  # type: ignore[assignment]
        from beacon.agent.checking import AgentChecks

        self.checks = AgentChecks(config, self.local, self.hub, self.store, self.docker_host,
                                  lambda sid: self.services.deregister_service(sid))
        self.services = LocalAgent(self.local, self.checks)  # the agent's own services and checks
        self.engine: Any = None
        self.registrator: Any = None
        self.forward_session: Any = None
        self.http_port: int | None = None
        self.dns_port: int | None = None
        self._runner: web.AppRunner | None = None
        self._http_server: asyncio.Server | None = None
        self._engine_tmp = ""  # a -dev agent's own engine dir when the shared one is taken
        self.http_guard: limits.ConnectionGuard | None = None
        self.http_fast: Any = None  # beacon.agent.http.fastpath.FastPath: hot reads before aiohttp
        self._dns: Any = None
        self.dns_engines: Any = None  # servers with ACLs: beacon.agent.dnsrpc.TokenEngines, for clients' tokens
        self.shutdown_requested = asyncio.Event()
        self.left_gracefully = False
        self.config_loader: Any = None  # () -> AgentConfig, re-reading the same flags and files
        self.fatal_error = ""
        self.raft_ready = asyncio.Event()
        self.hold_timeout = 7.0
        self._tasks: set[asyncio.Task[Any]] = set()

    def _make_consensus(self) -> Consensus:
        from beacon.agent.cluster import Cluster, RemoteConsensus

        cfg = self.config
        self.cluster = Cluster(self)  # gossip membership, in every mode
        if cfg.dev or (cfg.server and (cfg.bootstrap or (cfg.bootstrap_expect <= 1 and not cfg.retry_join
                                                         and not cfg.join and not cfg.etcd_endpoints))):
            self.mode = "single"
            return SingleServer(self.store, f"{cfg.advertise}:{cfg.server_port}", self.node_id,
                                cfg.node_name, cfg.data_dir or None)
        from beacon.agent.servers import ServerConsensus

        if cfg.server:
            self.mode = "server"
            return ServerConsensus(self)
        self.mode = "client"
        return RemoteConsensus(self)

    @property
    def gossip_lan(self) -> Any:
        """The LAN pool (beacon.gossip.Membership), None when gossip is not running (-dev without serf)."""
        return self.cluster.lan if self.cluster is not None else None

    @property
    def gossip_wan(self) -> Any:
        return self.cluster.wan if self.cluster is not None else None

    def raft_running(self) -> bool:
        """A running cluster a new server can join: its etcd answers linearizable requests (a member
        that started but has no quorum yet is not one: the other initial servers must form it)."""
        return self.raft is not None and bool(getattr(self.raft, "ready", True))

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.hub.bind(asyncio.get_running_loop())
        self.spawn(looplag.probe(), "loop-lag")  # beacon_event_loop_lag_seconds: stalls, measured
        await self.consensus.start()
        if self.mode == "single":
            telemetry.leader_changed(self.consensus.leader_address())
            await self._register_self()
        if self.config.engine_enabled:
            await self._start_engine()
        self.checks.start()
        await self._restore_local()
        self.checks.start_reaper()
        if self.config.server:
            self.session_reaper = SessionReaper(self.store, self.submit, self.consensus.is_leader,
                                                max_sleep=min(1.0, self.config.session_ttl_min / 4))
            self.session_reaper.start()
            from beacon.server.tombstones import TombstoneReaper

            self.tombstone_reaper = TombstoneReaper(self.store, self.submit, self.consensus.is_leader,
                                                    ttl=self.config.tombstone_ttl)
            self.tombstone_reaper.start()
        if self.config.http_port >= 0 or self.config.https_port >= 0:
            await self._start_http()
        self.spawn(security.write_initial_management(self), "acl-initial-management")
        self.spawn(security.reap_expired_tokens(self), "acl-token-reaper")
        if self.config.dns_port >= 0:
            await self._start_dns()
        if self.engine is not None:  # containers reach this agent's DNS and HTTP at the bridge gateway
            await self.engine.connect_agent(self._loopback(self.config.http_bind, self.http_port),
                                            self._loopback(self.config.dns_bind, self.dns_port))
        import aiohttp

        # No pool limit (aiohttp's default is 100 connections): every blocking query a client agent
        # relays holds one connection to a server for its whole wait, so the 101st would queue here.
        self.forward_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=self.config.max_query_time + 60, connect=2))
        # aiohttp resends a PUT or DELETE once by itself when a reused connection drops before the
        # answer; the server may already have applied that write (a CAS would then answer 409 for a write
        # that took effect). http.forward decides retries itself: only a refused connect moves on.
        if hasattr(self.forward_session, "_retry_connection"):
            self.forward_session._retry_connection = False
        await self.cluster.start()  # after HTTP and DNS: its gossip tags carry their ports
        if self.mode == "server":
            self.spawn(EtcdBootstrap(self).run(), "etcd-bootstrap")
        self.local.start()
        if self.mode == "single":
            await self.local.sync_changes()
        if self.config.registrator_enabled:
            await self._start_registrator()

    async def stop(self) -> None:
        if self.registrator is not None:  # first: the engine's shutdown is not a reason to deregister
            await self.registrator.stop()
            self.registrator = None
        if self._http_server is not None:
            self._http_server.close()  # stop accepting; open connections end in cleanup()
            self._http_server = None
        security.stop_https(self)
        if self.http_fast is not None:  # its connections are not aiohttp's: the runner cannot end them
            self.http_fast.close()
            self.http_fast = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._dns is not None:
            await self._dns.stop()
            self._dns = None
        await self.checks.stop()
        await self.local.stop()
        if self.engine is not None:
            await self.engine.stop()
            self.engine = None
        if self._engine_tmp:
            shutil.rmtree(self._engine_tmp, ignore_errors=True)
            self._engine_tmp = ""
        if self.session_reaper is not None:
            await self.session_reaper.stop()
            self.session_reaper = None
        if self.tombstone_reaper is not None:
            await self.tombstone_reaper.stop()
            self.tombstone_reaper = None
        for task in list(self._tasks):
            task.cancel()
        if self.cluster is not None:
            await self.cluster.stop(leave=self.left_gracefully)
        if self.forward_session is not None:
            await self.forward_session.close()
        if self.raft is not None:
            await self.raft.stop()
        if self.etcd_member is not None:
            await self.etcd_member.stop()
        await self.consensus.stop()

    async def leave(self) -> None:
        """Graceful leave: gossip `left` (the leader deregisters the node), a server leaves etcd too."""
        if self.cluster is None:
            return
        await self.cluster.leave()
        if self.mode == "server" and self.raft is not None and len(self.raft.peers()) > 1:
            try:  # leave the etcd cluster too, so the others' quorum no longer counts this server
                await asyncio.wait_for(self.raft.remove_server(self.raft.self_addr), 10)
            except Exception as exc:
                log.warning("leaving the etcd cluster: %s", exc)

    # ------------------------------------------------------------------ cluster reads
    async def consistent_read(self, stale: bool, consistent: bool) -> None:
        """Before a read on a cluster server: `?stale` reads local state at once; the default mode and
        `?consistent` first learn the log's current revision with a linearizable etcd read (no log
        write) and wait until this server has applied it, so every write acknowledged before the
        read is visible."""
        if self.mode != "server" or stale:
            return
        if self.raft is None:
            # Like Consul's rpc_hold_timeout: hold the request while the server is still starting.
            try:
                await asyncio.wait_for(self.raft_ready.wait(), self.hold_timeout)
            except TimeoutError:
                raise NoLeaderError() from None
        await self.raft.read_barrier()

    def autopilot_defaults(self) -> dict[str, Any]:
        """The autopilot configuration until one is written: this agent's ``autopilot`` block."""
        from beacon.server import autopilot

        return self.config.autopilot or dict(autopilot.DEFAULTS)

    def autopilot_config(self) -> dict[str, Any]:
        """The autopilot configuration in force (replicated, else this agent's block)."""
        from beacon.server import autopilot

        return autopilot.effective(self.store, self.autopilot_defaults())

    async def _fetch_node_state(self) -> tuple[Any, list[Service], list[HealthCheck]]:
        if self.mode == "client":
            from beacon.model import Node

            out = await self.consensus.call_server("node_state", {"node": self.config.node_name},  # type: ignore[attr-defined]
                                                   self.hold_timeout)
            node = Node.from_dict(out["node"]) if out["node"] else None
            return (node, [Service.from_dict(s) for s in out["services"]],
                    [HealthCheck.from_dict(c) for c in out["checks"]])
        _, node, services = self.store.node_services(self.config.node_name)
        _, checks = self.store.node_checks(self.config.node_name)
        return node, services, checks

    def server_http_targets(self) -> list[str]:
        """Servers' HTTP listeners from their gossip tags, the leader first when known."""
        if self.cluster is None:
            return []
        servers = sorted(self.cluster.servers(), key=lambda m: m.name != self.cluster.leader_name)
        return [_host_port(m.addr, int(m.tags["http_port"])) for m in servers if m.tags.get("http_port", "0") != "0"]

    def server_dns_targets(self) -> list[tuple[str, int]]:
        if self.cluster is None:
            return []
        return [(m.addr, int(m.tags["dns_port"])) for m in self.cluster.servers() if m.tags.get("dns_port", "0") != "0"]

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
        await self.submit(cmd.Register(**payload))
        self.local.node_in_sync = True

    async def _restore_local(self) -> None:
        services, checks = self.local.load_persisted()
        for svc in services:
            self.local.add_service(svc, source="api", persist=False)
        for chk, definition in checks:
            self.checks.load_ttl_state(chk)
            try:
                self.local.add_check(chk, definition, source="api", persist=False)
            except KeyError:
                log.warning("dropping persisted check %s: its service %s is gone", chk.check_id, chk.service_id)
                continue
            self.checks.start_runner(chk, definition)
        for obj in self.config.services:
            from beacon.agent.http.decode import decode_service

            svc, check_objs = decode_service(obj)
            await self.services.register_service(svc, check_objs, source="config", sync=False)
        for obj in self.config.checks:
            await self.services.register_check(obj, source="config", sync=False)

    async def _start_engine(self) -> None:
        from beacon.runtime import Engine, EngineError

        cfg = self.config
        base = os.path.join(cfg.data_dir, "engine") if cfg.data_dir else DEV_ENGINE_DIR
        socket_path = cfg.engine_socket or (os.path.join(cfg.data_dir, "engine.sock") if cfg.data_dir
                                            else os.path.join(DEV_ENGINE_DIR, "engine.sock"))
        self.engine = Engine(data_dir=base, socket_path=socket_path, isolation=cfg.engine_isolation)
        try:
            await self.engine.start()
        except EngineError:
            if cfg.data_dir or cfg.engine_socket:
                raise
            # Another -dev agent owns the shared dev engine: this one gets an engine of its own in a
            # temporary directory, removed when it stops, so any number of -dev agents run side by side.
            self._engine_tmp = tempfile.mkdtemp(prefix="beacon-dev-")
            self.engine = Engine(data_dir=self._engine_tmp, isolation=cfg.engine_isolation,
                                 socket_path=os.path.join(self._engine_tmp, "engine.sock"))
            await self.engine.start()
            log.info("%s is in use by another agent; this agent's engine runs in %s", DEV_ENGINE_DIR,
                     self._engine_tmp)

    @staticmethod
    def _loopback(bind: str, port: int | None) -> tuple[str, int] | None:
        if not port:
            return None
        return ("127.0.0.1" if bind in ("", "0.0.0.0") else "::1" if bind == "::" else bind), port

    async def _start_registrator(self) -> None:
        """The same registrator as `beacon registrator`: Docker API in, this agent's HTTP API out."""
        from beacon.registrator import Registrator, RegistratorConfig, RegistratorError, split_tags

        docker_host = self.docker_host()
        if docker_host is None or self.http_port is None:
            log.warning("registrator not started: it needs a container engine and the HTTP API")
            return
        opts = dict(self.config.registrator_options)
        host = self.config.http_bind
        host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
        registry = f"consul://[{host}]:{self.http_port}" if ":" in host else f"consul://{host}:{self.http_port}"
        tags = opts.get("tags", ())
        try:
            reg = Registrator(RegistratorConfig(
                docker_host=docker_host, registry=registry,
                hostname=str(opts.get("hostname") or self.config.node_name),
                ip=str(opts.get("ip", "")), internal=bool(opts.get("internal", False)),
                explicit=bool(opts.get("explicit", False)),
                tags=tuple(split_tags(tags) if isinstance(tags, str) else tags),
                resync=float(opts.get("resync", 30.0)), cleanup=bool(opts.get("cleanup", True)),
                deregister=opts.get("deregister", "always"), retry_attempts=2, retry_interval=0.5))
            if self.acl is not None:  # it registers through this agent's API: with the agent's token
                reg.registry.token = self.acl.tokens.get("agent") or self.acl.tokens.get("default") or ""
            await reg.start()
        except (RegistratorError, ValueError, TypeError) as exc:
            log.error("registrator not started: %s", exc)
            return
        self.registrator = reg

    def startup_lines(self) -> list[str]:
        lines = []
        if self.engine is not None:
            lines.append(f"Container engine: unix://{self.engine.socket_path} (isolation: {self.engine.isolation})"
                         f"  ->  export DOCKER_HOST=unix://{self.engine.socket_path}")
        if self.registrator is not None:
            lines.append(f"Registrator: {self.registrator.config.docker_host} -> {self.registrator.registry.base} "
                         f"(service IDs {self.registrator.hostname}:<container>:<port>)")
        return lines

    async def _start_http(self) -> None:
        # No aiohttp middlewares: metrics, errors, ?peer, ?dc and ACLs are one layer in the request
        # handler itself (metrics.serve_api below), so each request pays one coroutine for them.
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app[AGENT_KEY] = self
        from beacon.agent.http import coordinate, keyring

        for module in (agent_api, event, keyring, coordinate):  # agent-local everywhere (gossip-backed)
            module.router.install(app)
        if self.mode == "client":
            from beacon.agent.http import forward

            forward.install(app)
            # Agent endpoints that read the servers' intentions and CA: a server answers them.
            for path in ("/v1/agent/connect/authorize", "/v1/agent/connect/ca/roots",
                         "/v1/agent/connect/ca/leaf/{service}"):
                app.router.add_route("*", path, forward.forward)
        else:
            for module in (catalog, health, kv, status, operator, session, txn, snapshot, query, config, connect):
                module.router.install(app)
            connect.agent_router.install(app)
        security.install_http(self, app)  # ACL middleware and /v1/acl/*, /v1/agent/token/*
        metrics.install(app)
        monitor.install(app)
        if self.config.ui:
            ui.install(app)  # also redirects / to /ui/
        else:
            app.router.add_get("/", self._root)
        # Open blocking queries (every UI tab holds some) would otherwise hold shutdown for aiohttp's
        # default 60 s; Consul gives its HTTP servers 1 s.
        cfg = self.config
        self.http_guard = limits.ConnectionGuard(limits.HTTPLimits(
            max_conns_per_client=cfg.http_max_conns_per_client,
            read_header_timeout=cfg.http_read_header_timeout, idle_timeout=cfg.http_idle_timeout))
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0,
                                     keepalive_timeout=cfg.http_idle_timeout)
        await self._runner.setup()
        metrics.serve_api(self._runner)
        if cfg.http_port >= 0:
            sock = bind_tcp(self.config.http_bind, self.config.http_port)
            self.http_port = sock.getsockname()[1]
            from beacon.agent.http.fastpath import FastPath

            self.http_fast = FastPath(self, self.http_guard, cfg.http_idle_timeout)
            self._http_server = await limits.serve(self._runner, sock, self.http_guard, wrap=self.http_fast.factory)
        await security.start_https(self, self._runner, self.http_guard)

    async def _root(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="Consul Agent")

    async def _start_dns(self) -> None:
        if self.mode == "client":
            from beacon.agent.dnsrelay import DNSRelay

            if self.acl is not None:  # answered under this agent's DNS token, over the server RPC
                from beacon.agent.dnsrpc import ServerAsker, TokenRelay

                self._dns = TokenRelay(ServerAsker(self))
                log.info("DNS: asking the servers over RPC, under this agent's DNS token")
            else:  # the fast path: raw packets to a server's DNS listener
                self._dns = DNSRelay(self.server_dns_targets)
                log.info("DNS: relaying queries to the servers' DNS listeners")
            try:
                self.dns_port = await self._dns.start(self.config.dns_bind, self.config.dns_port)
            except ListenError:
                raise
            except OSError as exc:
                raise ListenError(exc.errno, listen_error("DNS interface", "udp+tcp", self.config.dns_bind,
                                                          self.config.dns_port, exc)) from None
            return
        try:
            from beacon.dns import DNSConfig, DNSServer
        except ImportError:
            log.warning("DNS interface not available in this build")
            return
        cfg = self.config
        dns_cfg = DNSConfig.from_consul_json(cfg.dns_config, domain=cfg.domain, datacenter=cfg.datacenter,
                                             node_name=cfg.node_name, recursors=cfg.recursors)
        self._dns = DNSServer(security.dns_store(self), dns_cfg)  # the store itself unless ACLs are on
        from beacon.agent.dnsrpc import TokenEngines

        self.dns_engines = TokenEngines(self._dns, self.store, self.acl)  # client agents' queries
        from beacon.agent.http.federation import remote_dns_targets

        self._dns.remote_targets = lambda dc: remote_dns_targets(self, dc)  # <name>.service.<dc>: WAN
        try:
            udp_port, _ = await self._dns.start(cfg.dns_bind, cfg.dns_port)
        except OSError as exc:
            raise ListenError(exc.errno, listen_error("DNS interface", "udp+tcp", cfg.dns_bind, cfg.dns_port,
                                                      exc)) from None
        self.dns_port = udp_port

    # ------------------------------------------------------------------ writes
    async def submit(self, command: Record | Command) -> ApplyResult:
        """Propose a command record (or one already in its log form, as the server RPC forwards it)."""
        if isinstance(command, Record):
            command = cmd.encode(command)
        with telemetry.timed_apply(command[0]):
            return await self.consensus.submit(command)

    def docker_host(self) -> str | None:
        """Where docker-exec checks and the registrator talk the Docker Engine API."""
        engine = getattr(self, "engine", None)
        if engine is not None:
            return f"unix://{engine.socket_path}"
        if os.environ.get("DOCKER_HOST"):
            return os.environ["DOCKER_HOST"]
        if os.path.exists("/var/run/docker.sock"):
            return "unix:///var/run/docker.sock"
        return None

    # ------------------------------------------------------------------ membership
    def members(self) -> list[dict[str, Any]]:
        if self.cluster is not None and self.cluster.members:
            return self.cluster.consul_members()
        cfg = self.config  # -dev without serf: this node alone
        tags = {"role": "consul" if cfg.server else "node", "dc": cfg.datacenter, "id": self.node_id,
                "vsn": "2", "vsn_min": "2", "vsn_max": "3", "build": "beacon", "segment": ""}
        if cfg.server:
            tags.update(port=str(cfg.server_port), expect=str(cfg.bootstrap_expect or 1), raft_vsn="3")
        return [{"Name": cfg.node_name, "Addr": cfg.advertise, "Port": cfg.serf_lan_port, "Tags": tags,
                 "Status": 1, "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2, "DelegateMin": 2,
                 "DelegateMax": 5, "DelegateCur": 4}]

    async def live_members(self) -> list[dict[str, Any]]:
        """The LAN members as Serf sees them right now (not the cached view), as Consul's endpoint."""
        lan = self.gossip_lan
        if lan is not None:
            from beacon.gossip import SerfError

            try:
                return await lan.consul_members()
            except SerfError as exc:  # a restarting Serf child: the last view
                log.debug("members from serf: %s", exc)
        return self.members()

    async def wan_members(self) -> list[dict[str, Any]]:
        wan = self.cluster.wan if self.cluster is not None else None
        if wan is None:
            return []
        return await wan.consul_members()

    async def join(self, address: str, wan: bool = False) -> None:
        from beacon.gossip import SerfError

        pool = self.cluster.wan if wan else self.cluster.lan
        if pool is None:
            why = "only servers join the WAN pool" if wan else (self.cluster.gossip_error or "gossip is not running")
            raise Failed(f"Failed to join {address}: {why}")
        try:
            await pool.join([address])
        except SerfError as exc:
            raise Failed(f"Failed to join {address}: {exc}") from None
        await self.cluster.refresh()

    def request_leave(self) -> None:
        async def leave_then_stop() -> None:
            try:
                await self.leave()
            finally:
                self.left_gracefully = True
                self.shutdown_requested.set()
        self.spawn(leave_then_stop(), "leave")

    async def force_leave(self, node: str, prune: bool = False) -> None:
        """Consul's force-leave: a failed member moves to left (with prune, it is forgotten at once)."""
        from beacon.gossip import SerfError

        lan = self.cluster.lan if self.cluster is not None else None
        if lan is None:
            raise Failed(f"agent: No node found with name '{node}'")
        known = node in self.cluster.members
        wan = self.cluster.wan
        try:
            await lan.force_leave(node, prune)
            if wan is not None:
                wan_name = node if "." in node and not known else f"{node}.{self.config.datacenter}"
                known = known or any(m["Name"] == wan_name for m in await wan.consul_members())
                await wan.force_leave(wan_name, prune)
        except SerfError as exc:
            raise Failed(str(exc)) from None
        if not known:
            raise Failed(f"agent: No node found with name '{node}'")
        await self.cluster.refresh()

    async def reload(self) -> None:
        """Re-read the config files (Consul's `reload`/SIGHUP): services and checks defined there are
        added, updated or removed to match; log level, DNS settings and check_update_interval change.
        API-registered services are untouched. Ports, addresses, node name and mode need a restart."""
        if self.config_loader is None:
            raise Failed("this agent was not started from flags and config files; nothing to reload")
        from beacon.agent.http.decode import decode_service
        from beacon.config import ConfigError

        try:
            new = self.config_loader()
        except ConfigError as exc:
            raise Failed(f"Failed reloading: {exc}") from None
        services = [decode_service(obj) for obj in new.services]
        wanted = {svc.id for svc, _ in services}
        for sid, entry in list(self.local.services.items()):
            if entry.source == "config" and not entry.deleted and sid not in wanted:
                await self.services.deregister_service(sid)
        for svc, check_objs in services:
            await self.services.register_service(svc, check_objs, source="config", replace_existing_checks=True,
                                        sync=False)
        wanted_checks = set()
        for obj in new.checks:
            chk, definition = self.checks.build(obj, "config", service=None)
            wanted_checks.add(chk.check_id)
            self.services.add_check(chk, definition, "config")
        for cid, entry in list(self.local.checks.items()):
            if entry.source == "config" and not entry.deleted and not entry.check.service_id \
                    and cid not in wanted_checks:
                await self.services.deregister_check(cid)
        cfg = self.config
        cfg.services, cfg.checks = new.services, new.checks
        if new.log_level != cfg.log_level:
            from beacon.logs import setup_logging

            cfg.log_level = new.log_level
            setup_logging(cfg.log_level, cfg.log_json)
        cfg.check_update_interval = self.local.check_update_interval = new.check_update_interval
        if self._dns is not None and hasattr(self._dns, "reload") and \
                (new.dns_config != cfg.dns_config or new.recursors != cfg.recursors):
            from beacon.dns import DNSConfig

            cfg.dns_config, cfg.recursors = new.dns_config, new.recursors
            self._dns.reload(DNSConfig.from_consul_json(cfg.dns_config, domain=cfg.domain,
                                                        datacenter=cfg.datacenter, node_name=cfg.node_name,
                                                        recursors=cfg.recursors))
        await self.services.sync_now()
        log.info("configuration reloaded: %d services and %d checks from config files",
                 len(services), len(new.checks))
