"""Gossip membership on Serf at a size this machine holds: failure detection, traffic and CPU at idle.

For each cluster size, starts that many real `serf agent` children (Beacon's supervisor and Membership
facade, the code the agent will run), each on its own loopback address 127.A.B.x with the LAN profile
Consul uses, all joined through the first; then:

* idle: for --idle seconds, every member's gossip bytes and packets sent and received (nftables
  counters in a table of our own, matched on each member's address; the RPC to the facade runs on
  127.0.0.1 and is not counted), and CPU and RSS of every serf process (/proc/<pid>/stat);
* failure detection, --rounds times: `kill -9` one member and time until each other member lists it
  `failed` (first observer, median, last), and until its event stream delivers `member-failed`.

Every round is printed, then the medians. Bounded: --budget seconds overall, every wait has a deadline,
and every process and the nftables table are removed at the end.

The heartbeat scheme this replaces is compared in the same run once the agent runs on this layer
(after the etcd work lands): see docs/benchmarks.md, "Membership".

    python3 bench/membership.py [--sizes 10,40] [--idle 20] [--rounds 3] [--budget 420]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

from beacon.gossip import MemberEvent, Membership, SerfConfig  # noqa: E402
from beacon.gossip.supervisor import free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


class Counters:
    """Per-address byte/packet counters in an nftables table owned by this run (root only)."""

    def __init__(self) -> None:
        self.table = f"beacon_membership_bench_{os.getpid()}"
        self.ok = shutil.which("nft") is not None and os.geteuid() == 0
        if self.ok:
            self.ok = self._nft("add", "table", "inet", self.table) and self._nft(
                "add", "chain", "inet", self.table, "out",
                "{ type filter hook output priority 0 ; policy accept ; }")
        if not self.ok:
            print("  (no nftables counters: traffic is not measured; run as root with `nft` installed)")

    def _nft(self, *args: str) -> bool:
        return subprocess.run(["nft", *args], capture_output=True, text=True).returncode == 0

    def watch(self, addr: str) -> None:
        if self.ok:
            self._nft("add", "rule", "inet", self.table, "out", "ip", "saddr", addr, "counter", "comment", f'"tx {addr}"')
            self._nft("add", "rule", "inet", self.table, "out", "ip", "daddr", addr, "counter", "comment", f'"rx {addr}"')

    def read(self) -> dict[str, tuple[int, int]]:
        """{"tx 127.x.y.z": (bytes, packets), "rx ...": ...}"""
        if not self.ok:
            return {}
        out = subprocess.run(["nft", "-j", "list", "table", "inet", self.table], capture_output=True, text=True)
        result: dict[str, tuple[int, int]] = {}
        for item in json.loads(out.stdout).get("nftables", []):
            rule = item.get("rule")
            if not rule:
                continue
            for expr in rule.get("expr", []):
                if "counter" in expr:
                    result[rule.get("comment", "")] = (expr["counter"]["bytes"], expr["counter"]["packets"])
        return result

    def close(self) -> None:
        if self.ok:
            self._nft("delete", "table", "inet", self.table)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def wait_for(pred, timeout: float, what: str):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while True:
        value = await pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.25)


async def start_cluster(n: int, net: str, tmp: str, key: str, counters: Counters) -> list[Membership]:
    members: list[Membership] = []

    async def one(i: int) -> Membership:
        addr = f"{net}.{10 + i}"
        counters.watch(addr)
        cfg = SerfConfig(node_name=f"m{i:03d}", data_dir=os.path.join(tmp, f"m{i:03d}"), bind_addr=addr,
                         port=free_port(addr, udp=True), encrypt=key, tags={"role": "node", "dc": "dc1"})
        m = await Membership.start_pool(cfg)
        m.serf.restart = False  # a killed member must stay dead for the detection rounds
        return m

    for start in range(0, n, 10):  # batches: 2 cores, and every child's start is a process spawn
        members += await asyncio.gather(*(one(i) for i in range(start, min(n, start + 10))))
    seed = f"{members[0].serf.config.bind_addr}:{members[0].serf.config.port}"
    for start in range(1, n, 10):
        await asyncio.gather(*(m.join([seed]) for m in members[start:start + 10]))

    async def converged() -> bool:
        for m in members:
            if sum(1 for x in await m.members() if x.status == "alive") < n:
                return False
        return True

    await wait_for(converged, 120, f"{n} members see each other")
    return members


async def idle(members: list[Membership], seconds: float, counters: Counters) -> dict[str, float]:
    pids = [m.serf.pid or 0 for m in members]
    addrs = [m.serf.config.bind_addr for m in members]
    c0, t0 = counters.read(), time.monotonic()
    cpu0 = [cpu_seconds(p) for p in pids]
    await asyncio.sleep(seconds)  # the measurement window itself, not a wait for a condition
    c1, dt = counters.read(), time.monotonic() - t0
    cpu1 = [cpu_seconds(p) for p in pids]
    out = {"cpu_pct_median": statistics.median((b - a) / dt * 100 for a, b in zip(cpu0, cpu1, strict=True)),
           "cpu_pct_max": max((b - a) / dt * 100 for a, b in zip(cpu0, cpu1, strict=True)),
           "rss_mib_median": statistics.median(rss_mib(p) for p in pids)}
    if c1:
        def rate(kind: str, idx: int) -> list[float]:
            return [(c1[f"{kind} {a}"][idx] - c0.get(f"{kind} {a}", (0, 0))[idx]) / dt for a in addrs]
        tx_b, rx_b, tx_p, rx_p = rate("tx", 0), rate("rx", 0), rate("tx", 1), rate("rx", 1)
        both = [a + b for a, b in zip(tx_b, rx_b, strict=True)]
        out |= {"bytes_s_median": statistics.median(both), "bytes_s_max": max(both),
                "tx_bytes_s_median": statistics.median(tx_b), "pkts_s_median": statistics.median(
                    a + b for a, b in zip(tx_p, rx_p, strict=True)), "tx_pkts_s_median": statistics.median(tx_p)}
    return out


async def detection_round(members: list[Membership], victim: Membership) -> tuple[list[float], list[float]]:
    """Seconds from the kill until each observer (1) lists the victim `failed` and (2) has its
    member-failed event delivered (the serf agent coalesces member events for 1-3 s before streaming)."""
    observers = [m for m in members if m is not victim]
    subs = [m.subscribe() for m in observers]

    async def listed(m: Membership) -> float:
        while True:
            x = await m.member(victim.node_name)
            if x is not None and x.status == "failed":
                return time.monotonic() - t0
            await asyncio.sleep(0.1)

    async def event(sub) -> float:  # noqa: ANN001
        while True:
            ev = await sub.get(120)
            if isinstance(ev, MemberEvent) and ev.type == "member-failed" and \
                    any(x.name == victim.node_name for x in ev.members):
                return time.monotonic() - t0

    t0 = time.monotonic()
    os.kill(victim.serf.pid or 0, signal.SIGKILL)
    try:
        state = asyncio.gather(*(asyncio.wait_for(listed(m), 120) for m in observers))
        events = asyncio.gather(*(event(s) for s in subs))
        a, b = await asyncio.gather(state, events)
        return sorted(a), sorted(b)
    finally:
        for s in subs:
            s.close()


async def run_size(n: int, args: argparse.Namespace, counters: Counters, deadline: float) -> dict[str, float]:
    net = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}"
    key = base64.b64encode(os.urandom(32)).decode()
    tmp = tempfile.mkdtemp(prefix="beacon-membership-bench-")
    members: list[Membership] = []
    try:
        t0 = time.monotonic()
        members = await start_cluster(n, net, tmp, key, counters)
        print(f"\n== {n} members on {net}.0/24: started and converged in {time.monotonic() - t0:.1f}s")
        idle_stats = await idle(members, args.idle, counters)
        print("  idle: " + ", ".join(f"{k} {v:,.2f}" for k, v in idle_stats.items()))
        firsts, medians, lasts, ev_medians = [], [], [], []
        alive = list(members[1:])  # member 0 is the seed; keep it
        for r in range(args.rounds):
            if time.monotonic() > deadline - 60:
                print("  (budget reached: fewer detection rounds)")
                break
            victim = alive.pop(random.randrange(len(alive)))
            times, ev_times = await detection_round([m for m in members if m.serf.pid], victim)
            firsts.append(times[0])
            medians.append(statistics.median(times))
            lasts.append(times[-1])
            ev_medians.append(statistics.median(ev_times))
            print(f"  round {r + 1}: kill -9 {victim.node_name}: listed failed by first {times[0]:.2f}s, "
                  f"median {statistics.median(times):.2f}s, all {len(times)} by {times[-1]:.2f}s; "
                  f"member-failed event delivered median {statistics.median(ev_times):.2f}s, "
                  f"last {ev_times[-1]:.2f}s")
        if firsts:
            idle_stats |= {"detect_first_s": statistics.median(firsts), "detect_median_s": statistics.median(medians),
                           "detect_all_s": statistics.median(lasts), "event_median_s": statistics.median(ev_medians)}
        return idle_stats
    finally:
        await asyncio.gather(*(m.stop() for m in members), return_exceptions=True)
        shutil.rmtree(tmp, ignore_errors=True)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10,40", help="cluster sizes, comma separated")
    ap.add_argument("--idle", type=float, default=20.0, help="seconds of idle measurement per size")
    ap.add_argument("--rounds", type=int, default=3, help="kill -9 rounds per size")
    ap.add_argument("--budget", type=float, default=420.0, help="overall seconds before stopping early")
    args = ap.parse_args()
    if shutil.which("serf") is None:
        sys.exit("needs the serf agent: apt-get install serf")
    deadline = time.monotonic() + args.budget
    counters = Counters()
    results: dict[int, dict[str, float]] = {}
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            if time.monotonic() > deadline - 90:
                print(f"(budget reached: size {n} skipped)")
                break
            results[n] = await asyncio.wait_for(run_size(n, args, counters, deadline),
                                                max(deadline - time.monotonic(), 30))
    finally:
        counters.close()
    print("\nsummary (medians; bytes and packets per agent per second, gossip only):")
    keys = ["detect_first_s", "detect_median_s", "detect_all_s", "event_median_s", "bytes_s_median", "bytes_s_max",
            "pkts_s_median", "tx_pkts_s_median", "cpu_pct_median", "cpu_pct_max", "rss_mib_median"]
    print("  members " + " ".join(f"{k:>16}" for k in keys))
    for n, r in results.items():
        print(f"  {n:7d} " + " ".join(f"{r.get(k, float('nan')):16.2f}" for k in keys))


if __name__ == "__main__":
    asyncio.run(main())
