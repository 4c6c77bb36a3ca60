"""`beacon agent`: build the config from files and flags, run the Agent until a signal."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from beacon.cli.flags import FlagParser
from beacon.config import (
    AgentConfig,
    ConfigError,
    _log_level,
    apply_file,
    config_dir_files,
    read_config_file,
    validate,
)
from beacon.logs import setup_logging

log = logging.getLogger("beacon.agent")


def build_parser() -> FlagParser:
    p = FlagParser("beacon agent", "Run a Beacon agent.")
    p.flag("dev", action="store_true",
           help="one-process development agent: server, HTTP, DNS, UI, container engine, registrator "
                "(in memory unless -data-dir)")
    p.flag("server", action="store_true", default=None, help="run as a server (holds and replicates the state)")
    p.flag("bootstrap", action="store_true", default=None,
           help="form a cluster of this server alone (Consul's -bootstrap; same as -bootstrap-expect 1)")
    p.flag("bootstrap-expect", type=int, help="servers to wait for before forming the cluster (3 or 5)")
    p.flag("node", dest="node_name", help="this node's name (default: the hostname)")
    p.flag("datacenter", help="datacenter name (default dc1)")
    p.flag("bind", dest="bind_addr", help="address for cluster traffic (default 127.0.0.1)")
    p.flag("advertise", dest="advertise_addr", help="address other agents use to reach this one (default -bind)")
    p.flag("client", dest="client_addr", help="address of the HTTP API and DNS listeners (default 127.0.0.1)")
    p.flag("http-port", type=int, help="HTTP API port (default 8500; -1 disables, 0 picks a free one)")
    p.flag("https-port", type=int, help="HTTPS API port (default off; needs tls.defaults cert_file/key_file)")
    p.flag("dns-port", type=int, help="DNS port (default 8600; -1 disables, 0 picks a free one)")
    p.flag("server-port", type=int, help="server consensus (etcd peer) port (default 8300)")
    p.flag("server-rpc-port", type=int, help="servers' internal RPC port (default 8303)")
    p.flag("serf-lan-port", type=int, help="LAN gossip (Serf) port, TCP and UDP (default 8301)")
    p.flag("serf-wan-port", type=int, help="WAN gossip (Serf) port of servers, TCP and UDP (default 8302)")
    p.flag("serf-bin", help="the serf binary (default: serf from PATH; Debian package `serf`)")
    p.flag("reconnect-timeout", help="reap failed nodes (and remove dead servers) after this long (default 72h)")
    p.flag("failure-timeout", help="deprecated and ignored: Serf's gossip detects failures")
    p.flag("data-dir", help="directory for state that survives restarts (required except with -dev)")
    p.flag("config-file", action="append", default=[], help="JSON or YAML config file (repeatable)")
    p.flag("config-dir", action="append", default=[],
           help="directory whose *.json, *.yaml and *.yml files are read in order (repeatable)")
    p.flag("log-level", help="trace, debug, info, warn or error (default info; debug with -dev)")
    p.flag("log-json", action="store_true", default=None, help="log one JSON object per line")
    p.flag("pid-file", help="write the agent's PID to this file")
    p.flag("domain", help="DNS domain served (default consul)")
    p.flag("recursor", action="append", default=[],
           help="upstream DNS server for names outside the domain (repeatable)")
    p.flag("retry-join", action="append", default=[], help="address of an agent to join, retried (repeatable)")
    p.flag("join", action="append", default=[], help="address of an agent to join at start (repeatable)")
    p.flag("retry-join-wan", action="append", default=[], help="address of a server of another datacenter "
           "to join over the WAN, retried (repeatable)")
    p.flag("join-wan", action="append", default=[], help="address of a WAN server to join at start (repeatable)")
    p.flag("retry-interval", help="time between -retry-join attempts (default 30s)")
    p.flag("rejoin", action="store_true", default=None, help="rejoin the cluster after a graceful leave too")
    p.flag("encrypt", help="cluster key from `beacon keygen` (required when binding a non-loopback address)")
    p.flag("etcd-bin", help="the etcd binary a server runs (default: etcd from PATH)")
    p.flag("etcd-endpoints", help="comma-separated client URLs of an existing etcd cluster (no member is started)")
    p.flag("etcd-ca-file", help="CA certificate for etcd TLS (required with a non-loopback address)")
    p.flag("etcd-cert-file", help="this server's certificate for etcd peer and client TLS")
    p.flag("etcd-key-file", help="the key of -etcd-cert-file")
    p.flag("raft-snapshot-threshold", type=int,
           help="commands between state-machine snapshots that let etcd compact its log")
    p.flag("node-meta", action="append", default=[], help="key:value metadata for this node (repeatable)")
    p.flag("enable-script-checks", action="store_true", default=None,
           help="allow script checks, including ones registered over HTTP (trusted networks only)")
    p.flag("enable-local-script-checks", action="store_true", default=None,
           help="allow script checks from config files only")
    p.flag("ui", action="store_true", default=None, help="serve the web UI at /ui (on by default)")
    p.flag("engine-socket", help="unix socket of the embedded container engine (Docker Engine API)")
    p.flag("engine-isolation", choices=["auto", "runc", "netns", "process"],
           help="how the embedded engine isolates containers: runc (images, namespaces, cgroups), "
                "netns, or process (host filesystem; a fallback); default auto")
    p.flag("no-engine", action="store_true", help="do not start the embedded container engine in -dev")
    p.flag("no-registrator", action="store_true",
           help="do not register the embedded engine's containers as services in -dev")
    return p


def _check_services(objs: list, path: str) -> None:
    """Decode a file's service definitions now, so a bad one is a one-line error naming the file."""
    from beacon.agent.http.decode import DecodeError, decode_service

    for obj in objs:
        try:
            decode_service(obj)
        except DecodeError as exc:
            name = obj.get("name") or obj.get("Name") if isinstance(obj, dict) else None
            what = f"service {name!r}" if isinstance(name, str) else "a service"
            msg = str(exc).removeprefix("Request decode failed: ")
            raise ConfigError(f"{path}: {what}: {msg}") from None


def load_config(argv: list[str]) -> AgentConfig:
    args = build_parser().parse_args(argv)
    cfg = AgentConfig()
    if args.dev:
        cfg.dev = True
        cfg.server = True
        cfg.log_level = "debug"
        cfg.engine_enabled = not args.no_engine
        cfg.registrator_enabled = cfg.engine_enabled and not args.no_registrator
    files: list[str] = []
    for path in args.config_file:
        files.append(path)
    for d in args.config_dir:
        files += config_dir_files(d)
    for path in files:
        before = len(cfg.services)
        apply_file(cfg, read_config_file(path), path)
        _check_services(cfg.services[before:], path)
    cfg.config_files = files
    simple = {"node_name": "node_name", "datacenter": "datacenter", "bind_addr": "bind_addr",
              "advertise_addr": "advertise_addr", "client_addr": "client_addr", "http_port": "http_port",
              "https_port": "https_port",
              "dns_port": "dns_port", "server_port": "server_port", "data_dir": "data_dir",
              "pid_file": "pid_file", "encrypt": "encrypt", "bootstrap_expect": "bootstrap_expect",
              "engine_socket": "engine_socket", "engine_isolation": "engine_isolation",
              "serf_lan_port": "serf_lan_port", "serf_wan_port": "serf_wan_port",
              "server_rpc_port": "server_rpc_port", "serf_bin": "serf_bin", "etcd_bin": "etcd_bin", "etcd_ca_file": "etcd_ca_file",
              "etcd_cert_file": "etcd_cert_file", "etcd_key_file": "etcd_key_file",
              "raft_snapshot_threshold": "raft_snapshot_threshold"}
    for attr, dest in simple.items():
        value = getattr(args, attr)
        if value is not None:
            setattr(cfg, dest, value)
    if args.datacenter:
        cfg.datacenter = args.datacenter.lower()
    if args.domain:
        cfg.domain = args.domain.strip(".").lower()
    for flag_name in ("server", "bootstrap", "rejoin", "log_json", "enable_script_checks",
                      "enable_local_script_checks", "ui"):
        if getattr(args, flag_name):
            setattr(cfg, flag_name, True)
    if args.log_level:
        cfg.log_level = _log_level(args.log_level, "-log-level")
    from beacon.durations import parse_duration

    if args.failure_timeout is not None:
        log.warning("-failure-timeout is deprecated and ignored: failures are detected by Serf's gossip "
                    "(SWIM probes and suspicion), see docs/architecture.md")
    for name in ("reconnect_timeout", "retry_interval"):
        value = getattr(args, name)
        if value is not None:
            try:
                setattr(cfg, name, parse_duration(value))
            except ValueError as exc:
                raise ConfigError(f"-{name.replace('_', '-')}: {exc}") from None
    cfg.recursors += args.recursor
    cfg.retry_join += args.retry_join
    cfg.join += args.join
    cfg.retry_join_wan += args.retry_join_wan
    cfg.join_wan += args.join_wan
    if args.etcd_endpoints:
        cfg.etcd_endpoints += [e.strip() for e in args.etcd_endpoints.split(",") if e.strip()]
    for item in args.node_meta:
        k, sep, v = item.partition(":")
        if not sep:
            raise ConfigError(f"-node-meta must be key:value, got {item!r}")
        cfg.node_meta[k] = v
    for port_name in ("http_port", "https_port", "dns_port", "server_port", "serf_lan_port", "serf_wan_port",
                      "server_rpc_port"):
        port = getattr(cfg, port_name)
        if not -1 <= port <= 65535:
            raise ConfigError(f"-{port_name.replace('_', '-')} must be a port number or -1, got {port}")
    validate(cfg)
    return cfg


async def serve(cfg: AgentConfig, argv: list[str] | None = None) -> int:
    from beacon.agent.agent import Agent

    agent = Agent(cfg)
    if argv is not None:
        agent.config_loader = lambda: load_config(argv)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[int] = []

    def on_signal(sig: int) -> None:
        received.append(sig)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)

    async def reload_on_hup() -> None:
        try:
            await agent.reload()
        except Exception as exc:
            log.error("reload failed: %s", getattr(exc, "message", exc))

    loop.add_signal_handler(signal.SIGHUP, lambda: agent.spawn(reload_on_hup(), "reload"))
    try:
        await agent.start()
    except Exception:
        await agent.stop()
        raise
    if cfg.pid_file:
        with open(cfg.pid_file, "w", encoding="utf-8") as f:
            f.write(f"{os.getpid()}\n")
    mode = "dev" if cfg.dev else ("server" if cfg.server else "client")
    print(f"==> Beacon agent running ({mode})!", flush=True)
    print(f"    Node name: {cfg.node_name}  Datacenter: {cfg.datacenter}  Node ID: {agent.node_id}", flush=True)
    print(f"    Client Addr: http={cfg.http_bind}:{agent.http_port} dns={cfg.dns_bind}:{agent.dns_port}",
          flush=True)
    for line in agent.startup_lines() if hasattr(agent, "startup_lines") else []:
        print(f"    {line}", flush=True)
    https = f" https_port={agent.https_port}" if agent.https_port is not None else ""
    print(f"==> Ready: http_port={agent.http_port} dns_port={agent.dns_port}{https}", flush=True)
    log.info("agent started: node=%s datacenter=%s mode=%s http=%s dns=%s", cfg.node_name, cfg.datacenter, mode,
             agent.http_port, agent.dns_port)
    waiter = asyncio.ensure_future(agent.shutdown_requested.wait())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    stopper.cancel()
    log.info("agent stopping")
    if received:
        sig = received[0]
        leave = cfg.leave_on_terminate if sig == signal.SIGTERM else not cfg.skip_leave_on_interrupt
        print(f"==> Caught signal: {signal.Signals(sig).name}", flush=True)
        if leave and agent.cluster is not None:
            print("==> Gracefully leaving the cluster", flush=True)
            try:
                await asyncio.wait_for(agent.leave(), 10)
            except Exception as exc:
                print(f"==> Leave failed: {exc}", flush=True)
    elif agent.left_gracefully:
        print("==> Left the cluster, shutting down", flush=True)
    await agent.stop()
    if cfg.pid_file:
        try:
            os.unlink(cfg.pid_file)
        except OSError:
            pass
    if agent.fatal_error:
        print(f"==> Error: {agent.fatal_error}", file=sys.stderr, flush=True)
        return 1
    print("==> Beacon agent stopped", flush=True)
    return 0


def run(argv: list[str]) -> int:
    # Config warnings are logged while the config is read: format them already.
    setup_logging("info", "-log-json" in argv or "--log-json" in argv)
    try:
        cfg = load_config(argv)
    except ConfigError as exc:
        print(f"==> Error: {exc}", file=sys.stderr)
        return 1
    setup_logging(cfg.log_level, cfg.log_json)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    from beacon.agent.agent import ListenError
    from beacon.agent.cluster import GossipUnavailable
    from beacon.agent.http.core import HTTPError
    from beacon.errors import BeaconError
    from beacon.server.durable import DataDirError

    try:
        return asyncio.run(serve(cfg, argv))
    except (ConfigError, DataDirError) as exc:
        print(f"==> Error: {exc}", file=sys.stderr)
        return 1
    except GossipUnavailable as exc:
        print(f"==> Error: {exc}", file=sys.stderr)
        return 1
    except (HTTPError, BeaconError) as exc:
        # Definitions in config files go through the same checks as the API (HTTPError from the
        # request decoders, domain errors from the agent).
        print(f"==> Error in configuration: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"==> Error starting agent: {exc.strerror if isinstance(exc, ListenError) else exc}", file=sys.stderr)
        return 1
