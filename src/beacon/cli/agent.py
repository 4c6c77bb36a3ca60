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
    p.flag("dev", action="store_true", help="one-process development cluster (in memory unless -data-dir)")
    p.flag("server", action="store_true", default=None)
    p.flag("bootstrap-expect", type=int)
    p.flag("bootstrap", action="store_true", default=None, help="single-server bootstrap (Consul's -bootstrap)")
    p.flag("node", dest="node_name")
    p.flag("datacenter")
    p.flag("bind", dest="bind_addr")
    p.flag("advertise", dest="advertise_addr")
    p.flag("client", dest="client_addr")
    p.flag("http-port", type=int, help="HTTP API port (-1 disables, 0 picks a free one)")
    p.flag("dns-port", type=int, help="DNS port (-1 disables, 0 picks a free one)")
    p.flag("server-port", type=int)
    p.flag("serf-lan-port", type=int)
    p.flag("reconnect-timeout", help="reap failed nodes after this long (default 72h)")
    p.flag("failure-timeout", help="mark a node failed after this long without a heartbeat (default 3s)")
    p.flag("data-dir")
    p.flag("config-file", action="append", default=[])
    p.flag("config-dir", action="append", default=[])
    p.flag("log-level")
    p.flag("log-json", action="store_true", default=None)
    p.flag("pid-file")
    p.flag("domain")
    p.flag("recursor", action="append", default=[])
    p.flag("retry-join", action="append", default=[])
    p.flag("encrypt")
    p.flag("node-meta", action="append", default=[])
    p.flag("enable-script-checks", action="store_true", default=None)
    p.flag("enable-local-script-checks", action="store_true", default=None)
    p.flag("ui", action="store_true", default=None)
    p.flag("engine-socket")
    p.flag("engine-isolation", choices=["auto", "netns", "process"])
    p.flag("no-engine", action="store_true", help="do not start the embedded container engine in -dev")
    p.flag("no-registrator", action="store_true",
           help="do not register the embedded engine's containers as services in -dev")
    return p


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
        apply_file(cfg, read_config_file(path), path)
    cfg.config_files = files
    simple = {"node_name": "node_name", "datacenter": "datacenter", "bind_addr": "bind_addr",
              "advertise_addr": "advertise_addr", "client_addr": "client_addr", "http_port": "http_port",
              "dns_port": "dns_port", "server_port": "server_port", "data_dir": "data_dir",
              "pid_file": "pid_file", "encrypt": "encrypt", "bootstrap_expect": "bootstrap_expect",
              "engine_socket": "engine_socket", "engine_isolation": "engine_isolation",
              "serf_lan_port": "serf_lan_port"}
    for attr, dest in simple.items():
        value = getattr(args, attr)
        if value is not None:
            setattr(cfg, dest, value)
    if args.datacenter:
        cfg.datacenter = args.datacenter.lower()
    if args.domain:
        cfg.domain = args.domain.strip(".").lower()
    for flag_name in ("server", "bootstrap", "log_json", "enable_script_checks", "enable_local_script_checks", "ui"):
        if getattr(args, flag_name):
            setattr(cfg, flag_name, True)
    if args.log_level:
        cfg.log_level = _log_level(args.log_level, "-log-level")
    from beacon.durations import parse_duration

    for name in ("reconnect_timeout", "failure_timeout"):
        value = getattr(args, name)
        if value is not None:
            try:
                setattr(cfg, name, parse_duration(value))
            except ValueError as exc:
                raise ConfigError(f"-{name.replace('_', '-')}: {exc}") from None
    cfg.recursors += args.recursor
    cfg.retry_join += args.retry_join
    for item in args.node_meta:
        k, sep, v = item.partition(":")
        if not sep:
            raise ConfigError(f"-node-meta must be key:value, got {item!r}")
        cfg.node_meta[k] = v
    for port_name in ("http_port", "dns_port", "server_port", "serf_lan_port"):
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
    print(f"==> Ready: http_port={agent.http_port} dns_port={agent.dns_port}", flush=True)
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
    from beacon.agent.http.core import HTTPError
    from beacon.server.durable import DataDirError

    try:
        return asyncio.run(serve(cfg, argv))
    except (ConfigError, DataDirError) as exc:
        print(f"==> Error: {exc}", file=sys.stderr)
        return 1
    except HTTPError as exc:
        print(f"==> Error in configuration: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"==> Error starting agent: {exc}", file=sys.stderr)
        return 1
