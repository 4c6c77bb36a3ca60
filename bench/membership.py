"""Membership at the sizes this machine holds: Serf gossip vs the heartbeat scheme it replaces.

1. Comparison (--compare-clients K): 3 servers + K clients on each scheme, both running at once, idle
   windows and kill rounds alternating between them. Gossip: real `serf agent` children run by
   Beacon's supervisor and Membership facade (the code the agent will use), LAN profile as Consul's.
   Heartbeat: real `beacon agent` processes (3 -server, K clients) running the removed heartbeat scheme
   from git history (bench/_heartbeat.py extracts its last commit), so both are measured in one run.
2. Gossip scale (--sizes): N serf members alone.

Every member/agent has its own loopback address 127.A.B.x. Measured:

* idle, per agent: membership bytes and packets sent + received per second (nftables counters in a
  table of this run's own: every packet of a serf member's address, which carries only gossip since
  its RPC is on 127.0.0.1; for a Beacon agent, TCP to or from port 8301, the heartbeat RPC), CPU and
  RSS per process (/proc/<pid>/stat, status);
* failure detection: `kill -9` of a client, time until every other member lists it `failed` (serf:
  also until the facade's event stream delivers member-failed; heartbeat: servers and clients apart,
  clients capped at --hb-cap).

Every round is printed, then the medians. Bounded: --budget seconds overall, every wait has a deadline,
every process and the nftables table are removed at the end.

    python3 bench/membership.py [--compare-clients 10] [--sizes 50] [--idle 15] [--rounds 3]
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _heartbeat import HEARTBEAT_PORT, REPO, HeartbeatCluster, tree_pids  # noqa: E402

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

    def watch(self, addr: str, tcp_port: int | None = None) -> None:
        """Count what `addr` sends (tx) and receives (rx). With `tcp_port`, only the server side of TCP
        on that port: requests in (daddr addr, dport) and replies out (saddr addr, sport). That is the
        only attribution that holds on loopback, where a socket that did not bind its source gets the
        destination's address as its own (so a client's requests show saddr = the server)."""
        if not self.ok:
            return
        for kind, field, direction in (("tx", "saddr", "sport"), ("rx", "daddr", "dport")):
            match = ["ip", field, addr] + (["tcp", direction, str(tcp_port)] if tcp_port else [])
            self._nft("add", "rule", "inet", self.table, "out", *match, "counter", "comment", f'"{kind} {addr}"')

    def watch_port(self, addr: str, port: int) -> None:
        """Count `addr`'s traffic on `port`, UDP and TCP (a Beacon agent's Serf: 8301). UDP is seen at
        both ends; TCP (push/pull state syncs) at its server end only, as in watch()."""
        if not self.ok:
            return
        for kind, field, direction in (("tx", "saddr", "sport"), ("rx", "daddr", "dport")):
            self._nft("add", "rule", "inet", self.table, "out", "ip", field, addr, "meta", "l4proto", "{", "tcp,",
                      "udp", "}", "th", direction, str(port), "counter", "comment", f'"{kind} {addr}"')

    def read(self) -> dict[str, tuple[int, int]]:
        """{"tx 127.x.y.z": (bytes, packets), "rx ...": ...}, summed over each address's rules"""
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
                    key = " ".join(rule.get("comment", "").split()[:2])
                    b, p = result.get(key, (0, 0))
                    result[key] = (b + expr["counter"]["bytes"], p + expr["counter"]["packets"])
        return result

    def close(self) -> None:
        if self.ok:
            self._nft("delete", "table", "inet", self.table)


def cpu_seconds(pid: int) -> float:
    """CPU of `pid`, or with a negative pid of the process tree -pid (a Beacon agent and its children)."""
    total = 0.0
    for p in tree_pids(-pid) if pid < 0 else [pid]:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def rss_mib(pid: int) -> float:
    total = 0.0
    for p in tree_pids(-pid) if pid < 0 else [pid]:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


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


def window_stats(pids: list[int], addrs: list[str], cpu0: list[float], cpu1: list[float],
                 c0: dict[str, tuple[int, int]], c1: dict[str, tuple[int, int]], dt: float) -> dict[str, float]:
    cpu = [(b - a) / dt * 100 for a, b in zip(cpu0, cpu1, strict=True)]
    out = {"cpu_pct_median": statistics.median(cpu), "cpu_pct_max": max(cpu),
           "rss_mib_median": statistics.median(rss_mib(p) for p in pids)}
    if c1:
        def rate(kind: str, idx: int) -> list[float]:
            return [(c1.get(f"{kind} {a}", (0, 0))[idx] - c0.get(f"{kind} {a}", (0, 0))[idx]) / dt for a in addrs]
        tx_b, rx_b, tx_p, rx_p = rate("tx", 0), rate("rx", 0), rate("tx", 1), rate("rx", 1)
        both = [a + b for a, b in zip(tx_b, rx_b, strict=True)]
        out |= {"bytes_s_median": statistics.median(both), "bytes_s_max": max(both),
                "pkts_s_median": statistics.median(a + b for a, b in zip(tx_p, rx_p, strict=True))}
    return out


async def idle(groups: dict[str, list[tuple[int, str]]], seconds: float, counters: Counters
               ) -> dict[str, dict[str, float]]:
    """One idle window; per group of (pid, address): traffic per agent, CPU and RSS per process."""
    c0, t0 = counters.read(), time.monotonic()
    cpu0 = {g: [cpu_seconds(p) for p, _ in members] for g, members in groups.items()}
    await asyncio.sleep(seconds)  # the measurement window itself, not a wait for a condition
    c1, dt = counters.read(), time.monotonic() - t0
    return {g: window_stats([p for p, _ in m], [a for _, a in m], cpu0[g], [cpu_seconds(p) for p, _ in m], c0, c1, dt)
            for g, m in groups.items()}


def fmt(stats: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:,.2f}" for k, v in stats.items())


def serf_groups(members: list[Membership], servers: int = 0) -> dict[str, list[tuple[int, str]]]:
    pairs = [(m.serf.pid or 0, m.serf.config.bind_addr) for m in members if m.serf.pid]
    if not servers:
        return {"all": pairs}
    return {"servers": pairs[:servers], "clients": pairs[servers:]}


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


async def serf_detection(members: list[Membership], alive: list[Membership]) -> tuple[list[float], list[float], str]:
    victim = alive.pop(random.randrange(len(alive)))
    times, ev_times = await detection_round([m for m in members if m.serf.pid], victim)
    line = (f"kill -9 {victim.node_name}: listed failed by first {times[0]:.2f}s, median "
            f"{statistics.median(times):.2f}s, all {len(times)} by {times[-1]:.2f}s; member-failed event "
            f"delivered median {statistics.median(ev_times):.2f}s")
    return times, ev_times, line


def summarize_detection(rows: list[tuple[list[float], list[float]]]) -> dict[str, float]:
    if not rows:
        return {}
    return {"detect_first_s": statistics.median(t[0] for t, _ in rows),
            "detect_median_s": statistics.median(statistics.median(t) for t, _ in rows),
            "detect_all_s": statistics.median(t[-1] for t, _ in rows),
            "event_median_s": statistics.median(statistics.median(e) for _, e in rows)}


async def run_size(n: int, args: argparse.Namespace, counters: Counters, deadline: float) -> dict[str, float]:
    net = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}"
    tmp = tempfile.mkdtemp(prefix="beacon-membership-bench-")
    members: list[Membership] = []
    try:
        t0 = time.monotonic()
        members = await start_cluster(n, net, tmp, base64.b64encode(os.urandom(32)).decode(), counters)
        print(f"\n== gossip scale: {n} serf members on {net}.0/24, started and converged in "
              f"{time.monotonic() - t0:.1f}s")
        stats = (await idle(serf_groups(members), args.idle, counters))["all"]
        print("  idle: " + fmt(stats))
        rows = []
        alive = list(members[1:])  # member 0 is the seed; keep it
        for r in range(args.rounds):
            if time.monotonic() > deadline - 60:
                print("  (budget reached: fewer detection rounds)")
                break
            times, ev_times, line = await serf_detection(members, alive)
            rows.append((times, ev_times))
            print(f"  round {r + 1}: {line}")
        return stats | summarize_detection(rows)
    finally:
        await asyncio.gather(*(m.stop() for m in members), return_exceptions=True)
        shutil.rmtree(tmp, ignore_errors=True)


def derive_heartbeat_agents(row: dict[str, dict[str, float]], k: int) -> None:
    """The counters see each heartbeat exchange at its server end only (see Counters.watch). Every
    second there are 3k + 6 exchanges of one shape (k clients and 3 servers each heartbeat every other
    server), so a client's share is 3 exchanges and a server's is what it serves plus 2 of its own."""
    srv, cli = row["servers"], row["clients"]
    if "bytes_s_median" not in srv:
        return
    flows = 3 * k + 6
    total_b, total_p = srv["bytes_s_median"] * 3, srv["pkts_s_median"] * 3
    cli["bytes_s_median"] = cli["bytes_s_max"] = total_b * 3 / flows
    cli["pkts_s_median"] = total_p * 3 / flows
    for key, total in (("bytes_s_median", total_b), ("bytes_s_max", total_b), ("pkts_s_median", total_p)):
        srv[key] += total * 2 / flows


async def compare(k: int, args: argparse.Namespace, counters: Counters, deadline: float) -> None:
    """3 servers + k clients on each scheme at once, rounds alternating between them."""
    n = 3 + k
    tmp = tempfile.mkdtemp(prefix="beacon-membership-compare-")
    members: list[Membership] = []
    hb = HeartbeatCluster(f"127.{random.randint(100, 250)}.{random.randint(1, 250)}", os.path.join(tmp, "hb"))
    # Beacon agents of this tree: membership on Serf (LAN profile), everything else as in production.
    gossip = HeartbeatCluster(f"127.{random.randint(100, 250)}.{random.randint(1, 250)}", os.path.join(tmp, "gossip"),
                              src=os.path.join(REPO, "src"), extra=("-retry-interval", "1s"))
    clusters = {"heartbeat": hb, "beacon": gossip}
    try:
        t0 = time.monotonic()
        members = await start_cluster(n, f"127.{random.randint(100, 250)}.{random.randint(1, 250)}",
                                      os.path.join(tmp, "serf"), base64.b64encode(os.urandom(32)).decode(), counters)
        await hb.start(k)
        await gossip.start(k)
        for a in hb.agents:
            counters.watch(a.addr, tcp_port=HEARTBEAT_PORT)
        for a in gossip.agents:
            counters.watch_port(a.addr, 8301)
        print(f"\n== comparison at {n} agents (3 servers + {k} clients): bare serf members, Beacon agents on "
              f"Serf (this tree) and on the removed heartbeat scheme (all started in {time.monotonic() - t0:.1f}s). "
              f"serf: per serf process; beacon/heartbeat: CPU and RSS per agent process tree (agent + its serf "
              f"and etcd children, which do everything else too), traffic = membership ports only")
        idle_rows: dict[str, list[dict[str, dict[str, float]]]] = {"serf": [], "beacon": [], "heartbeat": []}
        for r in range(args.rounds):
            for scheme in ("serf", "beacon", "heartbeat"):
                groups = serf_groups(members, 3) if scheme == "serf" else {
                    "servers": [(-a.proc.pid, a.addr) for a in clusters[scheme].agents if a.server],
                    "clients": [(-a.proc.pid, a.addr) for a in clusters[scheme].agents if not a.server]}
                row = await idle(groups, args.idle, counters)
                if scheme == "heartbeat":
                    derive_heartbeat_agents(row, k)
                idle_rows[scheme].append(row)
                print(f"  idle round {r + 1} {scheme:9s}: servers: {fmt(row['servers'])}")
                print(f"  {'':23s} clients: {fmt(row['clients'])}")
        serf_alive = list(members[3:])
        hb_alive = [a for a in hb.agents if not a.server]
        gossip_alive = [a for a in gossip.agents if not a.server]
        serf_rows, hb_servers, hb_clients = [], [], []
        beacon_servers: list[list[float]] = []
        beacon_clients: list[list[float]] = []
        for r in range(args.rounds):
            if time.monotonic() > deadline - 60:
                print("  (budget reached: fewer detection rounds)")
                break
            times, ev_times, line = await serf_detection(members, serf_alive)
            serf_rows.append((times, ev_times))
            print(f"  kill round {r + 1} serf     : {line}")
            victim = hb_alive.pop(random.randrange(len(hb_alive)))
            servers, clients = await hb.detection(victim, args.hb_cap)
            seen = sorted(c for c in clients if c is not None)
            hb_servers.append(servers)
            hb_clients.append(len(seen))
            print(f"  kill round {r + 1} heartbeat: kill -9 {victim.name}: servers listed it failed at "
                  + ", ".join(f"{t:.2f}s" for t in servers)
                  + f"; clients: {len(seen)} of {len(clients)} within {args.hb_cap:.0f}s"
                  + (f" (by {seen[-1]:.2f}s)" if seen else ""))
            victim = gossip_alive.pop(random.randrange(len(gossip_alive)))
            servers, clients = await gossip.detection(victim, args.hb_cap)
            seen = sorted(c for c in clients if c is not None)
            beacon_servers.append(servers)
            beacon_clients.append(seen)
            print(f"  kill round {r + 1} beacon   : kill -9 {victim.name}: servers listed it failed at "
                  + ", ".join(f"{t:.2f}s" for t in servers)
                  + f"; clients: {len(seen)} of {len(clients)} within {args.hb_cap:.0f}s"
                  + (f" (by {seen[-1]:.2f}s)" if seen else ""))
        print("  medians:")
        for scheme, rows in idle_rows.items():
            for g in ("servers", "clients"):
                keys = rows[0][g].keys()
                print(f"    {scheme:9s} {g:7s}: " + fmt({k: statistics.median(r[g][k] for r in rows) for k in keys}))
        if serf_rows:
            print("    serf      detection: " + fmt(summarize_detection(serf_rows)))
        if beacon_servers and all(beacon_servers):
            print(f"    beacon    detection: servers median {statistics.median(statistics.median(s) for s in beacon_servers):.2f}s; "
                  f"clients median {statistics.median(statistics.median(c) for c in beacon_clients if c):.2f}s")
        if hb_servers and all(hb_servers):
            print(f"    heartbeat detection: servers median {statistics.median(statistics.median(s) for s in hb_servers):.2f}s; "
                  f"clients that saw it within {args.hb_cap:.0f}s: {hb_clients}")
    finally:
        hb.stop()
        gossip.stop()
        await asyncio.gather(*(m.stop() for m in members), return_exceptions=True)
        shutil.rmtree(tmp, ignore_errors=True)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compare-clients", type=int, default=10,
                    help="clients (plus 3 servers) in the serf-vs-heartbeat comparison; 0 skips it")
    ap.add_argument("--sizes", default="50", help="serf-only cluster sizes, comma separated ('' skips)")
    ap.add_argument("--idle", type=float, default=15.0, help="seconds per idle measurement window")
    ap.add_argument("--rounds", type=int, default=3, help="idle windows and kill -9 rounds per scheme/size")
    ap.add_argument("--hb-cap", type=float, default=20.0, help="seconds to wait for heartbeat clients to see a failure")
    ap.add_argument("--budget", type=float, default=600.0, help="overall seconds before stopping early")
    args = ap.parse_args()
    if shutil.which("serf") is None:
        sys.exit("needs the serf agent: apt-get install serf")
    deadline = time.monotonic() + args.budget
    counters = Counters()
    results: dict[int, dict[str, float]] = {}
    try:
        if args.compare_clients:
            await asyncio.wait_for(compare(args.compare_clients, args, counters, deadline),
                                   max(deadline - time.monotonic(), 30))
        for n in (int(x) for x in args.sizes.split(",") if x.strip()):
            if time.monotonic() > deadline - 90:
                print(f"(budget reached: size {n} skipped)")
                break
            results[n] = await asyncio.wait_for(run_size(n, args, counters, deadline),
                                                max(deadline - time.monotonic(), 30))
    finally:
        counters.close()
    if results:
        print("\ngossip scale summary (medians; bytes and packets per agent per second, gossip only):")
        keys = ["detect_first_s", "detect_median_s", "detect_all_s", "event_median_s", "bytes_s_median",
                "bytes_s_max", "pkts_s_median", "cpu_pct_median", "cpu_pct_max", "rss_mib_median"]
        print("  members " + " ".join(f"{k:>16}" for k in keys))
        for n, r in results.items():
            print(f"  {n:7d} " + " ".join(f"{r.get(k, float('nan')):16.2f}" for k in keys))


if __name__ == "__main__":
    asyncio.run(main())
