"""Membership on Serf, on real processes: 3 servers and 3 clients on their own 127.x addresses, an
encrypted gossip pool; user events, key rotation, failure detection, autopilot and its replicated
configuration; -dev and -bootstrap."""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import signal
import subprocess
import time

import pytest

from tests.cluster.conftest import _block, start_cluster
from tests.conftest import beacon_cmd, beacon_env, dig, launch, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.integration,
              pytest.mark.skipif(shutil.which("serf") is None, reason="needs serf (apt-get install serf)")]


def jget(agent, path: str):
    status, _, body = agent.request("GET", path, timeout=5)
    return status, (json.loads(body) if body.strip() else None)


def statuses(agent) -> dict[str, int]:
    try:
        status, members = jget(agent, "/v1/agent/members")
    except OSError:
        return {}
    return {m["Name"]: m["Status"] for m in members or []} if status == 200 else {}


def wait_for_event(everyone: dict, event_id: str, payload: bytes | None = None) -> None:
    """Every agent lists the user event. Serf gossips an event to a few random members, which pass it on;
    one that all of those missed gets it from the next push-pull exchange, whose state carries the recent
    events (every 30 s on the LAN profile): so the wait covers one push-pull interval."""
    def has_event(agent) -> bool:
        return any(e["ID"] == event_id and (payload is None or base64.b64decode(e["Payload"]) == payload)
                   for e in jget(agent, "/v1/event/list")[1])
    for name, agent in everyone.items():
        try:
            wait_until(lambda a=agent: has_event(a), timeout=35)
        except AssertionError:
            raise AssertionError(f"{name} has not received event {event_id}; received by "
                                 f"{[n for n, a in everyone.items() if has_event(a)]}; {name}'s events: "
                                 f"{jget(agent, '/v1/event/list')[1]}; its log: {agent.lines[-20:]}") from None


def test_three_servers_three_clients_events_keys_failures_and_autopilot(tmp_path) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    c = start_cluster(tmp_path, clients=3, extra=("-encrypt", key, "-reconnect-timeout", "6s"))
    try:
        everyone = c.all()
        # Every agent, clients included, sees all six alive (clients joined two servers only).
        for name, agent in everyone.items():
            try:
                wait_until(lambda a=agent: sorted(statuses(a)) == sorted(everyone)
                           and set(statuses(a).values()) == {1}, timeout=40)
            except AssertionError:
                raise AssertionError(f"{name} sees {statuses(agent)}; every agent: "
                                     f"{ {n: statuses(a) for n, a in everyone.items()} }") from None

        # A user event fired on one client is gossiped to every agent of the datacenter. Serf's
        # agents join without replay: a joiner ignores events older (by the event Lamport clock)
        # than what its join peers had seen, and a client that has not exchanged state since may
        # fire with a lower clock than a later joiner's floor (seen once: the last client to join
        # never got the event). Joining every server again first lifts c1's clock past every
        # floor, as any member's would be after its next push-pull.
        for name in ("s1", "s2", "s3"):
            status, _, body = c.clients["c1"].request("PUT", f"/v1/agent/join/{c.addr(name)}")
            assert status == 200, body
        status, _, body = c.clients["c1"].request("PUT", "/v1/event/fire/deploy", b"v2")
        assert status == 200
        event_id = json.loads(body)["ID"]
        wait_for_event(everyone, event_id, b"v2")

        # Key rotation through the keyring API: install, use, remove the old one; gossip keeps working.
        new = base64.b64encode(os.urandom(32)).decode()
        s1 = c.servers["s1"]
        for method, expect in (("POST", 200), ("PUT", 200)):
            status, _, body = s1.request(method, "/v1/operator/keyring", {"Key": new})
            assert status == expect, body
        status, _, body = s1.request("DELETE", "/v1/operator/keyring", {"Key": key})
        assert status == 200, body
        # A keyring list is a Serf query: members answer over UDP within the query timeout, so a loaded
        # machine can leave one answer out of a single list. Every member must report the new key alone.
        def lan_ring() -> dict:
            return [r for r in jget(s1, "/v1/operator/keyring")[1] if not r["WAN"]][0]
        try:
            wait_until(lambda: (lambda r: r["Keys"] == {new: 6} and r["NumNodes"] == 6)(lan_ring()), timeout=30)
        except AssertionError:
            raise AssertionError(f"LAN keyring after rotation: {lan_ring()}") from None
        status, _, body = c.clients["c2"].request("PUT", "/v1/event/fire/after-rotation")
        rotated_id = json.loads(body)["ID"]
        wait_for_event(everyone, rotated_id)

        # kill -9 of a client: failed on every other agent, its services leave DNS.
        c3 = c.clients["c3"]
        c3.request("PUT", "/v1/agent/service/register", {"Name": "web", "Port": 80})
        wait_until(lambda: dig(s1.dns_port, "web.service.consul", "+short", server=s1.host).strip() == c.addr("c3"),
                   timeout=15)
        t0 = time.monotonic()
        c.signal("c3", signal.SIGKILL)
        others = {n: a for n, a in everyone.items() if n != "c3"}
        for agent in others.values():
            wait_until(lambda a=agent: statuses(a).get("c3") == 4, timeout=30)
        seen_failed = time.monotonic() - t0
        wait_until(lambda: dig(s1.dns_port, "web.service.consul", "+short", server=s1.host).strip() == "", timeout=30)
        print(f"\nclient kill -9: failed on all 5 other agents after {seen_failed:.1f}s, "
              f"out of DNS after {time.monotonic() - t0:.1f}s")

        # The autopilot configuration is replicated: written through a client agent (forwarded to a
        # server), read back on every server. The body is the whole configuration (Consul's PUT).
        status, _, body = c.clients["c1"].request("PUT", "/v1/operator/autopilot/configuration",
                                                  {"CleanupDeadServers": False, "MaxTrailingLogs": 250})
        assert status == 200 and body.strip() == b"true", body
        for name, server in c.servers.items():
            conf = jget(server, "/v1/operator/autopilot/configuration")[1]
            assert (conf["CleanupDeadServers"], conf["MaxTrailingLogs"], conf["MinQuorum"]) == (False, 250, 0), (name, conf)

        # kill -9 of a server (and its etcd member): clients see it failed; after the reconnect timeout
        # autopilot removes it from etcd's membership, once its configuration allows it.
        victim = next(n for n in ("s3", "s2") if n != c.leader())
        victim_peer = f"{c.addr(victim)}:8300"

        def autopilot_kept(why: str) -> bool:
            """The leader's reconciler logged that it keeps the dead victim (past reconnect_timeout)."""
            return any(f"keeping dead server {victim}: {why}" in line
                       for n, a in c.servers.items() if n != victim for line in a.lines)
        t0 = time.monotonic()
        c.signal(victim, signal.SIGKILL)
        for name in ("c1", "c2"):
            wait_until(lambda n=name: statuses(c.clients[n]).get(victim) == 4, timeout=30)
        print(f"server kill -9: failed on the clients after {time.monotonic() - t0:.1f}s")
        leader = c.servers[c.leader()]
        wait_until(lambda: {s["Name"]: s["SerfStatus"]
                            for s in jget(leader, "/v1/operator/autopilot/health")[1]["Servers"]}.get(victim) == "failed",
                   timeout=30)

        def peers() -> set[str]:
            _, conf = jget(leader, "/v1/operator/raft/configuration?stale")
            return {s["Address"] for s in conf["Servers"]}

        assert victim_peer in peers()
        # CleanupDeadServers false: past the reconnect timeout the leader decides to keep it.
        wait_until(lambda: autopilot_kept("CleanupDeadServers is false"), timeout=60)
        assert victim_peer in peers()
        # MinQuorum 3 with 3 servers: removing the dead one would leave 2, so it stays.
        status, _, body = leader.request("PUT", "/v1/operator/autopilot/configuration",
                                         {"CleanupDeadServers": True, "MinQuorum": 3})
        assert status == 200 and body.strip() == b"true", body
        wait_until(lambda: autopilot_kept("it would leave 2 servers, fewer than MinQuorum 3"), timeout=30)
        assert victim_peer in peers()
        # A check-and-set against a stale index changes nothing; against the current one it applies.
        conf = jget(leader, "/v1/operator/autopilot/configuration")[1]
        status, _, body = leader.request("PUT", f"/v1/operator/autopilot/configuration?cas={conf['ModifyIndex'] - 1}",
                                         {"CleanupDeadServers": True, "MinQuorum": 2})
        assert status == 200 and body.strip() == b"false", body
        assert victim_peer in peers()
        status, _, body = leader.request("PUT", f"/v1/operator/autopilot/configuration?cas={conf['ModifyIndex']}",
                                         {"CleanupDeadServers": True, "MinQuorum": 2})
        assert status == 200 and body.strip() == b"true", body
        wait_until(lambda: victim_peer not in peers(), timeout=60)
        print(f"server kill -9: removed from the etcd membership after {time.monotonic() - t0:.1f}s")
        _, health = jget(leader, "/v1/operator/autopilot/health")
        assert victim not in {s["Name"] for s in health["Servers"]}
        # The two remaining servers still commit.
        status, _, body = c.clients["c1"].request("PUT", "/v1/kv/after", "ok")
        assert status == 200 and body.strip() == b"true"
    finally:
        c.stop_all()


def test_a_dev_agent_and_a_client_join_each_other(tmp_path) -> None:
    block = _block()
    dev_addr, client_addr = f"{block}.5", f"{block}.6"
    dev = launch("-node", "dev1", "-bind", dev_addr, "-client", dev_addr)
    client = None
    try:
        client = launch("-node", "cl1", "-bind", client_addr, "-client", client_addr,
                        "-data-dir", str(tmp_path / "cl1"), dev=False)
        assert set(statuses(client)) == {"cl1"}
        # The -dev agent joins the client (HTTP), and the client finds the server from gossip tags.
        status, _, body = dev.request("PUT", f"/v1/agent/join/{client_addr}")
        assert status == 200, body
        for agent in (dev, client):
            wait_until(lambda a=agent: statuses(a) == {"dev1": 1, "cl1": 1}, timeout=15)
        client.request("PUT", "/v1/agent/service/register", {"Name": "joined", "Port": 7})
        wait_until(lambda: [s["Node"] for s in jget(dev, "/v1/catalog/service/joined")[1]] == ["cl1"], timeout=15)
        # ?near= sorts by network coordinates: the named node (RTT 0) first, whichever it is.
        for origin in ("cl1", "dev1"):
            wait_until(lambda o=origin: [n["Node"] for n in jget(dev, f"/v1/catalog/nodes?near={o}")[1]][:1] == [o],
                       timeout=15)
        assert [n["Node"] for n in jget(client, "/v1/catalog/nodes?near=_agent")[1]][0] == "cl1"
        _, coord = jget(dev, "/v1/coordinate/node/dev1")
        status, _, _ = dev.request("PUT", "/v1/coordinate/update", {"Node": "cl1", "Coord": coord[0]["Coord"]})
        assert status == 200
        assert jget(dev, "/v1/coordinate/node/cl1")[1][0]["Coord"] == coord[0]["Coord"]
        status, _, body = dev.request("PUT", "/v1/coordinate/update", {"Node": "cl1", "Coord": {"Vec": [1]}})
        assert status == 400, body
        # The other way: a second client joins the -dev agent with `beacon join`.
        c2_addr = f"{block}.7"
        c2 = launch("-node", "cl2", "-bind", c2_addr, "-client", c2_addr, "-data-dir", str(tmp_path / "cl2"),
                    dev=False)
        try:
            out = subprocess.run(beacon_cmd("join", f"-http-addr=http://{c2_addr}:{c2.http_port}", dev_addr),
                                 env=beacon_env(), capture_output=True, text=True, timeout=30)
            assert out.returncode == 0, out.stdout + out.stderr
            wait_until(lambda: statuses(dev).get("cl2") == 1, timeout=15)
            # A graceful leave: the -dev server deregisters the node.
            c2.stop(signal.SIGTERM)
            wait_until(lambda: statuses(dev).get("cl2") == 3, timeout=15)
            wait_until(lambda: jget(dev, "/v1/catalog/node/cl2")[1] is None, timeout=15)
        finally:
            c2.stop(signal.SIGKILL)
    finally:
        if client is not None:
            client.stop(signal.SIGKILL)
        dev.stop(signal.SIGKILL)


def test_bootstrap_server_starts_alone_and_without_serf_the_agent_names_the_package(tmp_path) -> None:
    addr = f"{_block()}.{random.randint(10, 200)}"
    server = launch("-server", "-bootstrap", "-node", "solo", "-bind", addr, "-client", addr,
                    "-data-dir", str(tmp_path / "solo"), dev=False)
    try:
        wait_until(lambda: jget(server, "/v1/status/leader")[1] == f"{addr}:8300", timeout=15)
        assert statuses(server) == {"solo": 1}
        wait_until(lambda: [c["CheckID"] for c in jget(server, "/v1/health/node/solo")[1]] == ["serfHealth"],
                   timeout=15)
    finally:
        server.stop(signal.SIGKILL)
    out = subprocess.run(beacon_cmd("agent", "-node", "x", "-data-dir", str(tmp_path / "x"), "-bind", addr,
                                    "-http-port", "0", "-dns-port", "0", "-serf-bin", "/nonexistent/serf"),
                         env=beacon_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if line.startswith("==> Error")]
    assert len(errors) == 1 and "`serf`" in errors[0], out.stderr
    dev = launch("-serf-bin", "/nonexistent/serf", "-node", "lonely")
    try:
        assert statuses(dev) == {"lonely": 1}
        assert any("`serf`" in line for line in dev.lines)
    finally:
        dev.stop(signal.SIGKILL)


def test_two_datacenters_federated_over_wan(tmp_path) -> None:
    block = _block()
    a1, a2, ac = f"{block}.31", f"{block}.32", f"{block}.33"
    agents = []
    try:
        s2 = launch("-server", "-bootstrap", "-datacenter", "dc2", "-node", "east", "-bind", a2, "-client", a2,
                    "-data-dir", str(tmp_path / "east"), dev=False)
        agents.append(s2)
        s1 = launch("-server", "-bootstrap", "-node", "west", "-bind", a1, "-client", a1,
                    "-data-dir", str(tmp_path / "west"), "-join-wan", a2, dev=False)
        agents.append(s1)
        c1 = launch("-node", "west-client", "-bind", ac, "-client", ac, "-data-dir", str(tmp_path / "wc"),
                    "-join", a1, dev=False)
        agents.append(c1)
        wait_until(lambda: sorted(m["Name"] for m in jget(s1, "/v1/agent/members?wan=1")[1]) == ["east.dc2", "west.dc1"],
                   timeout=20)
        for agent in (s1, c1):
            wait_until(lambda a=agent: jget(a, "/v1/catalog/datacenters")[1] == ["dc1", "dc2"], timeout=20)
        assert jget(s2, "/v1/catalog/datacenters")[1] == ["dc2", "dc1"]

        s2.request("PUT", "/v1/agent/service/register", {"Name": "web", "Port": 8080})
        wait_until(lambda: jget(s2, "/v1/catalog/service/web")[1], timeout=15)
        for agent in (s1, c1):  # reads: HTTP with ?dc=, DNS <name>.service.<dc>.<domain> and <node>.node.<dc>
            status, found = jget(agent, "/v1/catalog/service/web?dc=dc2")
            assert status == 200 and [(s["Node"], s["Datacenter"]) for s in found] == [("east", "dc2")]
            assert dig(agent.dns_port, "web.service.dc2.consul", "+short", server=agent.host).strip() == a2
            assert dig(agent.dns_port, "east.node.dc2.consul", "+short", server=agent.host).strip() == a2
            assert dig(agent.dns_port, "web.service.consul", "+short", server=agent.host).strip() == ""
        # writes: ?dc= and a catalog registration naming the datacenter in its body
        status, _, body = c1.request("PUT", "/v1/kv/federated?dc=dc2", "yes")
        assert status == 200 and body.strip() == b"true"
        assert s2.request("GET", "/v1/kv/federated?raw")[2] == b"yes"
        assert s1.request("GET", "/v1/kv/federated?raw")[0] == 404
        status, _, body = c1.request("PUT", "/v1/catalog/register",
                                     {"Datacenter": "dc2", "Node": "ext", "Address": "192.0.2.1"})
        assert status == 200, body
        assert jget(s2, "/v1/catalog/node/ext")[1]["Node"]["Address"] == "192.0.2.1"
        assert jget(s1, "/v1/catalog/node/ext")[1] is None
        for agent in (s1, c1):
            status, _, body = agent.request("GET", "/v1/catalog/nodes?dc=nowhere")
            assert status == 500 and b"No path to datacenter" in body
    finally:
        for agent in agents:
            agent.stop(signal.SIGKILL)
