"""HTTP API throughput: KV GET and PUT requests/s on one agent core, against a bare aiohttp anchor.

The anchor is the ceiling for any aiohttp server on this machine: a handler that returns a small JSON
body, measured in the same run with the same wrk settings. Beacon's ratio to it says how much of the
framework's budget the API logic takes.

    python3 bench/http_api.py [--seconds 10] [--connections 100]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request

# Named http_api.py, not http.py: a bench/http.py would shadow the stdlib's `http` for every script in
# this folder (aiohttp imports it).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import beacon_agent, env, pinned, require  # noqa: E402

ANCHOR = textwrap.dedent("""
    import asyncio, socket, sys
    from aiohttp import web
    try:
        import uvloop; uvloop.install()
    except ImportError:
        pass
    async def h(request):
        return web.json_response([{"Key": "bench/key", "Value": "dmFsdWU=", "Flags": 0}])
    app = web.Application()
    app.router.add_get("/v1/kv/bench/key", h)
    sock = socket.socket(); sock.bind(("127.0.0.1", 0)); sock.listen(1024)
    print(sock.getsockname()[1], flush=True)
    web.run_app(app, sock=sock, access_log=None, print=None)
""")


def wrk(url: str, seconds: int, connections: int, script: str | None = None) -> float:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    if script:
        argv += ["-s", script]
    out = subprocess.run(pinned(1, argv + [url]), capture_output=True, text=True, timeout=seconds + 30).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(out)
    return float(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=100)
    args = ap.parse_args()
    require("wrk")
    results: dict[str, float] = {}
    proc = subprocess.Popen(pinned(0, [sys.executable, "-c", ANCHOR]), stdout=subprocess.PIPE, text=True, env=env())
    try:
        port = int(proc.stdout.readline())
        time.sleep(0.3)
        results["anchor"] = wrk(f"http://127.0.0.1:{port}/v1/kv/bench/key", args.seconds, args.connections)
    finally:
        proc.terminate()
        proc.wait(10)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write('wrk.method = "PUT"\nwrk.body = "value"\n')
        put_script = f.name
    try:
        with beacon_agent(core=0) as (_, http, _dns):
            base = f"http://127.0.0.1:{http}"
            urllib.request.urlopen(urllib.request.Request(base + "/v1/kv/bench/key", data=b"value", method="PUT"))
            results["get"] = wrk(base + "/v1/kv/bench/key", args.seconds, args.connections)
            results["put"] = wrk(base + "/v1/kv/bench/key", args.seconds, args.connections, put_script)
        with tempfile.TemporaryDirectory() as d, beacon_agent("-data-dir", d, core=0) as (_, http, _dns):
            base = f"http://127.0.0.1:{http}"
            results["put_durable"] = wrk(base + "/v1/kv/bench/key", args.seconds, args.connections, put_script)
    finally:
        os.unlink(put_script)
    a = results["anchor"]
    print(f"aiohttp anchor (bare handler)      {a:10.0f} req/s")
    for name, label in (("get", "Beacon KV GET"), ("put", "Beacon KV PUT (in memory)"),
                        ("put_durable", "Beacon KV PUT (-data-dir, fsync)")):
        print(f"{label:<34} {results[name]:10.0f} req/s   {results[name] / a:5.2f}x anchor")
    print()
    print("| measure | req/s | vs bare aiohttp |")
    print("|---|---|---|")
    print(f"| bare aiohttp handler (anchor) | {a:.0f} | 1.00x |")
    for name, label in (("get", "KV GET"), ("put", "KV PUT, in memory"), ("put_durable", "KV PUT, -data-dir (fsync'd)")):
        print(f"| {label} | {results[name]:.0f} | {results[name] / a:.2f}x |")


if __name__ == "__main__":
    main()
