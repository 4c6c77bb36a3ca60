"""Benchmark of the check scheduler: thousands of HTTP and TCP checks on one agent loop.

Targets (an aiohttp server answering 200 and a TCP listener) run in a separate process pinned to
another core, so the figures are the scheduler's own. Two phases:

1. anchor: the same probes (HTTP GET through the shared session, TCP connect) fired back to back
   with bounded concurrency, no scheduler: CPU seconds per probe for the bare I/O;
2. scheduler: N checks (half HTTP, half TCP) at a 10 s interval, staggered as the agent does it, run
   for --duration seconds. Reports CPU use of the scheduler process (% of one core), CPU per run and
   its ratio to the anchor, lateness of runs against their due time (p50/p99/max), event-loop lag
   (p99/max of a 20 ms heartbeat), and any non-passing results.

Usage: python3 bench/checks.py [--checks 5000] [--interval 10] [--duration 40] [--uvloop] [--gc-freeze]
Bounded: the whole run takes about duration + 15 s. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

from beacon.checks import CheckDefinition, CheckScheduler  # noqa: E402
from beacon.checks.http import HTTPProbe, make_http_session  # noqa: E402
from beacon.checks.network import TCPProbe  # noqa: E402


def _pin(core: int) -> None:
    try:
        if len(os.sched_getaffinity(0)) > 1:
            os.sched_setaffinity(0, {core % os.cpu_count()})  # type: ignore[operator]
    except (AttributeError, OSError):
        pass


def _targets(conn, use_uvloop: bool) -> None:  # runs in the child process
    _pin(1)
    from aiohttp import web

    async def main() -> None:
        async def ok(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/health", ok)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        tcp = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
        tcp_port = tcp.sockets[0].getsockname()[1]
        conn.send((http_port, tcp_port))
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_reader(conn.fileno(), stop.set)  # parent closes the pipe or sends: stop
        await stop.wait()
        await runner.cleanup()
        tcp.close()

    if use_uvloop:
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())


class CountingNotifier:
    def __init__(self) -> None:
        self.results = 0
        self.not_passing: dict[str, int] = {}
        self.sample: list[str] = []

    def update_check(self, check_id: str, status: str, output: str) -> None:
        self.results += 1
        if status != "passing":
            self.not_passing[status] = self.not_passing.get(status, 0) + 1
            if len(self.sample) < 3:
                self.sample.append(f"{check_id}: {output[:120]}")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def anchor(http_url: str, tcp_target: str, n: int) -> float:
    """CPU seconds per bare probe (half HTTP, half TCP), 50 in flight."""
    session = make_http_session(512)
    http = HTTPProbe(CheckDefinition(http=http_url, interval=10), 10.0, lambda: session)
    tcp = TCPProbe(tcp_target, 10.0)
    sem = asyncio.Semaphore(50)

    async def one(i: int) -> str:
        async with sem:
            return (await (http if i % 2 else tcp).run())[0]

    cpu0 = time.process_time()
    statuses = await asyncio.gather(*(one(i) for i in range(n)))
    cpu = time.process_time() - cpu0
    await session.close()
    bad = sum(1 for s in statuses if s != "passing")
    if bad:
        print(f"  anchor: {bad} of {n} probes not passing")
    return cpu / n


async def run(args: argparse.Namespace, http_port: int, tcp_port: int) -> None:
    http_url = f"http://127.0.0.1:{http_port}/health"
    tcp_target = f"127.0.0.1:{tcp_port}"
    per_probe = await anchor(http_url, tcp_target, 4000)
    print(f"anchor (bare probes, no scheduler): {per_probe * 1e6:.0f} us CPU per probe")

    notifier = CountingNotifier()
    sched = CheckScheduler(notifier)
    loop = asyncio.get_running_loop()
    for i in range(args.checks):
        if i % 2:
            body = {"ID": f"http-{i}", "Name": "h", "HTTP": http_url, "Interval": f"{args.interval}s"}
        else:
            body = {"ID": f"tcp-{i}", "Name": "t", "TCP": tcp_target, "Interval": f"{args.interval}s"}
        sched.add(CheckDefinition.from_json(body))

    if args.gc_freeze:
        # What an agent can do once its startup objects exist: move them out of the collector's
        # way so full collections do not walk them (gen2 pauses otherwise dominate max lateness).
        gc.collect()
        gc.freeze()
    lags: list[float] = []

    async def heartbeat() -> None:
        while True:
            t = loop.time()
            await asyncio.sleep(0.02)
            lags.append(loop.time() - t - 0.02)

    hb = asyncio.create_task(heartbeat())
    # Let the first interval (the stagger window) pass, then measure steady state.
    await asyncio.sleep(min(args.interval, args.duration / 4))
    sched.stats.lateness.clear()
    runs0, results0 = sched.stats.runs, notifier.results
    lags.clear()
    cpu0, wall0 = time.process_time(), loop.time()
    await asyncio.sleep(args.duration)
    cpu, wall = time.process_time() - cpu0, loop.time() - wall0
    runs = sched.stats.runs - runs0
    lateness = list(sched.stats.lateness)
    hb.cancel()
    async with asyncio.timeout(30):
        await sched.stop()

    expected = args.checks * wall / args.interval
    print(f"checks: {args.checks} (half HTTP, half TCP) every {args.interval:g}s; measured {wall:.1f}s "
          f"after a {min(args.interval, args.duration / 4):g}s warm-up; loop: {type(loop).__module__}"
          f"{'; gc.freeze() after setup' if args.gc_freeze else ''}")
    print(f"runs: {runs} ({runs / wall:.0f}/s; expected ~{expected:.0f}), results reported: "
          f"{notifier.results - results0}, skipped slots: {sched.stats.skipped_slots}, "
          f"probe errors: {sched.stats.probe_errors}")
    print(f"CPU: {cpu:.2f}s over {wall:.1f}s = {100 * cpu / wall:.1f}% of one core; "
          f"{cpu / max(runs, 1) * 1e6:.0f} us per run = {cpu / max(runs, 1) / per_probe:.2f}x the bare probe")
    print(f"lateness vs due time: p50 {pct(lateness, 50) * 1e3:.2f} ms, p99 {pct(lateness, 99) * 1e3:.2f} ms, "
          f"max {max(lateness, default=float('nan')) * 1e3:.2f} ms (n={len(lateness)})")
    print(f"event-loop lag (20 ms heartbeat): p99 {pct(lags, 99) * 1e3:.2f} ms, "
          f"max {max(lags, default=float('nan')) * 1e3:.2f} ms, mean {statistics.fmean(lags) * 1e3:.2f} ms")
    if notifier.not_passing:
        print(f"NOT PASSING: {notifier.not_passing}; e.g. {notifier.sample}")
    else:
        print("all results passing")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=5000)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=40.0)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after the checks are added")
    args = parser.parse_args()

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_targets, args=(child, args.uvloop), daemon=True)
    proc.start()
    try:
        if not parent.poll(20):
            raise SystemExit("targets did not start")
        http_port, tcp_port = parent.recv()
        _pin(0)
        if args.uvloop:
            import uvloop
            uvloop.run(run(args, http_port, tcp_port))
        else:
            asyncio.run(run(args, http_port, tcp_port))
    finally:
        parent.send("stop")
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)


if __name__ == "__main__":
    main()
