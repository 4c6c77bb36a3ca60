"""`beacon registrator [flags] [consul://host:port]`: register published container ports in any
Consul-compatible agent, reading the Docker Engine API (embedded engine or dockerd)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from beacon.cli.flags import FlagParser

DEFAULT_ENGINE_SOCKET = "/tmp/beacon-dev/engine.sock"


def _parser() -> FlagParser:
    p = FlagParser("beacon registrator", "Register every published port of running containers as a service.")
    p.add_argument("registry", nargs="?", default="",
                   help="consul://host:port, consul-tls://host:port or consul-unix:///path.sock "
                        "(default: $CONSUL_HTTP_ADDR or 127.0.0.1:8500)")
    p.flag("docker-host", help="Docker Engine API: unix:///path.sock or tcp://host:port "
                               "(default: $DOCKER_HOST, else the embedded engine's socket)")
    p.flag("hostname", default="", help="first part of service IDs (default: this host's name)")
    p.flag("ip", default="", help="address registered for every service")
    p.flag("internal", action="store_true", help="register the container's IP and exposed port")
    p.flag("explicit", action="store_true", help="only containers with SERVICE_NAME or SERVICE_<port>_NAME")
    p.flag("tags", default="", help="tags for every service (comma list, \\, keeps a comma)")
    p.flag("useIpFromLabel", dest="ip_from_label", default="", help="take the address from this label")
    p.flag("resync", type=float, default=30.0, help="seconds between full syncs, 0 for only at start (default 30)")
    p.flag("cleanup", action="store_true", help="remove this host's stale registrations at each sync (the default)")
    p.flag("no-cleanup", action="store_true", help="keep stale registrations (also -cleanup=false)")
    p.flag("deregister", default="always", choices=("always", "on-success", "never", "maintenance"),
           help="what a stopped container does to its services (default always)")
    p.flag("retry-attempts", type=int, default=0, help="extra attempts to reach the registry at start; -1 forever")
    p.flag("retry-interval", type=int, default=2000, help="milliseconds between attempts (default 2000)")
    p.flag("log-level", default="info")
    return p


def docker_host_from(flag: str | None) -> str:
    if flag:
        return flag
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    return "unix://" + (os.environ.get("BEACON_ENGINE_SOCKET") or DEFAULT_ENGINE_SOCKET)


async def _serve(reg) -> int:  # type: ignore[no-untyped-def]
    from beacon.registrator import RegistratorError

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    starter = asyncio.ensure_future(reg.start())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if not starter.done():
        starter.cancel()
        await reg.stop()
        return 0
    try:
        starter.result()
    except RegistratorError as exc:
        print(f"==> Error: {exc}", file=sys.stderr, flush=True)
        await reg.stop()
        return 1
    print(f"==> Registrator watching {reg.config.docker_host} -> {reg.registry.base} "
          f"(host {reg.hostname}, address {reg.host_ip})", flush=True)
    await stopper
    await reg.stop()
    return 0


def run(argv: list[str]) -> int:
    from beacon.logs import setup_logging
    from beacon.registrator import Registrator, RegistratorConfig, RegistratorError, split_tags

    # Go's flag package spells booleans -cleanup=false; `-cleanup consul://...` must keep the URI.
    argv = [{"false": "-no-cleanup", "0": "-no-cleanup"}.get(a.split("=", 1)[1].lower(), "-cleanup")
            if a.lstrip("-").startswith("cleanup=") else a for a in argv]
    args = _parser().parse_args(argv)
    try:
        setup_logging(args.log_level, False)
    except Exception:
        setup_logging("info", False)
    try:
        cfg = RegistratorConfig(
            docker_host=docker_host_from(args.docker_host), registry=args.registry, hostname=args.hostname,
            ip=args.ip, internal=args.internal, explicit=args.explicit, tags=tuple(split_tags(args.tags)),
            ip_from_label=args.ip_from_label, resync=args.resync, cleanup=not args.no_cleanup,
            deregister=args.deregister, retry_attempts=args.retry_attempts,
            retry_interval=args.retry_interval / 1000.0)
        reg = Registrator(cfg)
    except (RegistratorError, ValueError) as exc:
        print(f"==> Error: {exc}", file=sys.stderr)
        return 1
    logging.getLogger("beacon.registrator").debug("config: %s", cfg)
    return asyncio.run(_serve(reg))
