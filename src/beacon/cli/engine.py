"""`beacon engine`: run only the embedded container engine, serving the Docker API on a unix socket."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from beacon.cli.flags import FlagParser

DEFAULT_DATA_DIR = "/tmp/beacon-dev"


def _parser() -> FlagParser:
    p = FlagParser("beacon engine", "Run the embedded container engine (Docker Engine API on a unix socket).")
    p.flag("data-dir", default=DEFAULT_DATA_DIR, help="where container state and logs live")
    p.flag("socket", "engine-socket", dest="socket", default=None,
           help="unix socket to serve the Docker API on (default <data-dir>/engine.sock)")
    p.flag("isolation", choices=("auto", "runc", "netns", "process"), default="auto",
           help="runc: images run by runc (auto picks it as root); netns/process: the command on the host "
                "filesystem (own network/UTS/PID namespaces, or a plain process group)")
    p.flag("log-level", default="warning", help="trace, debug, info, warning or error")
    return p


async def _serve(data_dir: str, socket_path: str | None, isolation: str) -> int:
    from beacon.runtime import Engine, EngineError

    engine = Engine(data_dir=data_dir, socket_path=socket_path, isolation=isolation)
    try:
        await engine.start()
    except EngineError as exc:
        print(f"Error: {exc.message}", file=sys.stderr)
        return 1
    for warning in engine.warnings:
        print(warning, file=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"==> Beacon engine ({engine.isolation} isolation) listening on unix://{engine.socket_path}", flush=True)
    await stop.wait()
    await engine.stop()
    return 0


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    level = {"trace": "DEBUG"}.get(args.log_level.lower(), args.log_level.upper())
    logging.basicConfig(level=getattr(logging, level, logging.WARNING), format="%(asctime)s [%(levelname)s] %(name)s: %(message)s")
    try:
        import uvloop  # the agent runs on uvloop, so the standalone engine does too
    except ImportError:
        return asyncio.run(_serve(args.data_dir, args.socket, args.isolation))
    return uvloop.run(_serve(args.data_dir, args.socket, args.isolation))
