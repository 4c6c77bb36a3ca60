"""Patroni keeps a real PostgreSQL primary and replica on a real Beacon agent, and fails over.

Debian's own Patroni (the `patroni` package: 3.0 on the system Python, talking to Consul through
python-consul, unchanged) uses nearly everything a Consul-backed lock service needs: a session with
a TTL and `delete` behaviour renewed every loop, the leader key taken with `?acquire` and kept with
CAS, member keys bound to the session, blocking queries on the cluster prefix, and a service per
member with an HTTP check and role tags that it re-tags on failover (what `primary.<scope>.service.consul`
resolves). The test brings up two members, checks that the replica streams from the primary, then
`kill -9`s the primary's Patroni and postmaster: the session must expire, the lock pass to the
replica, and DNS follow.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import pytest
import yaml

from tests.conftest import AgentProcess, dig, wait_until

PATRONI = "/usr/bin/patroni"

pytestmark = pytest.mark.slow


def _pg_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


def _requirements() -> str:
    if os.geteuid() != 0:
        return "needs root (PostgreSQL runs as the postgres user)"
    if not os.path.exists(PATRONI) or _pg_bin() is None or shutil.which("psql") is None:
        return "apt-get install patroni python3-consul postgresql"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres user (apt-get install postgresql)"
    if subprocess.run(["/usr/bin/python3", "-c", "import consul, patroni"], capture_output=True).returncode:
        return "Debian's patroni cannot import python-consul (apt-get install python3-consul)"
    return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


class Member:
    def __init__(self, root: str, scope: str, name: str, consul: str) -> None:
        self.name = name
        self.dir = os.path.join(root, name)
        self.rest = _free_port()
        self.pg = _free_port()
        self.log = os.path.join(root, f"{name}.log")
        self.proc: subprocess.Popen[bytes] | None = None
        pw = pwd.getpwnam("postgres")
        os.mkdir(self.dir, 0o700)
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        cfg = {
            "scope": scope, "name": name,
            "restapi": {"listen": f"127.0.0.1:{self.rest}", "connect_address": f"127.0.0.1:{self.rest}"},
            "consul": {"host": consul, "register_service": True},
            # ttl 20: Patroni's session TTL is half of it, and sessions take at least 10 s (Consul's
            # session_ttl_min); loop_wait + 2 * retry_timeout must fit in ttl.
            "bootstrap": {"dcs": {"ttl": 20, "loop_wait": 2, "retry_timeout": 5}, "initdb": [{"encoding": "UTF8"}]},
            "postgresql": {
                "listen": f"127.0.0.1:{self.pg}", "connect_address": f"127.0.0.1:{self.pg}",
                "data_dir": os.path.join(self.dir, "data"), "bin_dir": _pg_bin(),
                "pgpass": os.path.join(self.dir, "pgpass"),
                "authentication": {"replication": {"username": "replicator", "password": "rep-pass"},
                                   "superuser": {"username": "postgres", "password": "su-pass"}},
                "pg_hba": ["host replication replicator 127.0.0.1/32 md5", "host all all 127.0.0.1/32 md5",
                           "local all all trust"],
                "parameters": {"unix_socket_directories": self.dir},
            },
        }
        self.config = os.path.join(self.dir, "patroni.yml")
        with open(self.config, "w") as f:
            yaml.safe_dump(cfg, f)
        os.chown(self.config, pw.pw_uid, pw.pw_gid)

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(["runuser", "-u", "postgres", "--", PATRONI, self.config],
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        """kill -9 this member's Patroni and postmaster (every process whose command line names its
        directory); the postmaster's children exit when it is gone."""
        for pid in _pids_mentioning(self.dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            self.proc.wait(10)

    def sql(self, query: str) -> str:
        out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.pg), "-U", "postgres", "-d", "postgres",
                              "-tAc", query], capture_output=True, text=True, timeout=20,
                             env={**os.environ, "PGPASSWORD": "su-pass", "PGCONNECT_TIMEOUT": "3"})
        return out.stdout.strip() if out.returncode == 0 else f"error: {out.stderr.strip()}"

    def tail(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-30:])
        except OSError:
            return ""


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line names ``text``, or whose working directory is under it (a
    postmaster's children run in its data directory and are titled ``postgres: <cluster>: ...``)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
            cwd = os.readlink(f"/proc/{entry}/cwd") if text.startswith("/") else ""
        except OSError:
            continue
        if text in cmdline or (cwd and cwd.startswith(text)):
            pids.append(int(entry))
    return pids


@pytest.fixture
def pg_cluster():
    """A directory the postgres user owns, a unique Patroni scope, and the members started in it
    (killed, with their postmasters' children, at the end)."""
    reason = _requirements()
    if reason:
        pytest.skip(reason)
    root = tempfile.mkdtemp(prefix="beacon-patroni-", dir="/tmp")
    pw = pwd.getpwnam("postgres")
    os.chown(root, pw.pw_uid, pw.pw_gid)
    scope = f"pg{uuid.uuid4().hex[:8]}"
    members: list[Member] = []
    yield root, scope, members
    for m in members:
        m.kill()
    # The postmasters' children exit once their parent is gone.
    wait_until(lambda: not _pids_mentioning(root) and not _pids_mentioning(scope), timeout=20)
    shutil.rmtree(root, ignore_errors=True)


def test_patroni_pair_runs_on_beacon_and_fails_over(start_agent, pg_cluster) -> None:
    root, scope, members = pg_cluster
    agent: AgentProcess = start_agent()
    consul = f"127.0.0.1:{agent.http_port}"

    def kv(key: str) -> bytes | None:
        status, _, body = agent.request("GET", f"/v1/kv/service/{scope}/{key}?raw")
        return body if status == 200 else None

    def srv_ports(tag: str) -> set[int]:
        out = dig(agent.dns_port, f"{tag}.{scope}.service.consul", "SRV", "+short")
        return {int(line.split()[2]) for line in out.splitlines() if len(line.split()) == 4}

    n1 = Member(root, scope, "node1", consul)
    n2 = Member(root, scope, "node2", consul)
    members += [n1, n2]

    # The first member initializes the cluster and takes the leader lock through its session.
    n1.start()
    try:
        wait_until(lambda: kv("leader") == b"node1", timeout=90, interval=0.2)
        wait_until(lambda: _http_status(f"http://127.0.0.1:{n1.rest}/primary") == 200, timeout=30, interval=0.2)
    except AssertionError:
        pytest.fail("node1 did not become the leader:\n" + n1.tail())
    assert kv("initialize") and kv("config")
    # Patroni's first session has the TTL of its built-in ttl (30 s); once it reads the cluster's
    # ttl it makes another (10 s) and lets the first expire. The lock is held by the newest one.
    holder = agent.json("GET", f"/v1/kv/service/{scope}/leader")[0]["Session"]  # type: ignore[index]
    session = agent.json("GET", f"/v1/session/info/{holder}")[0]  # type: ignore[index]
    assert session["Name"] == f"{scope}-node1" and session["Behavior"] == "delete", session
    assert session["TTL"] == "10.0s", session

    # The second clones it and streams from it; a row written on the primary reaches it.
    n2.start()
    try:
        wait_until(lambda: _http_status(f"http://127.0.0.1:{n2.rest}/replica") == 200, timeout=90, interval=0.2)
    except AssertionError:
        pytest.fail("node2 did not become a running replica:\n" + n2.tail())
    assert n1.sql("CREATE TABLE t (x int); INSERT INTO t VALUES (42)") == "CREATE TABLE\nINSERT 0 1"
    wait_until(lambda: n2.sql("SELECT x FROM t") == "42", timeout=30, interval=0.2)
    assert n2.sql("SELECT pg_is_in_recovery()") == "t"
    assert kv("members/node1") and kv("members/node2")

    # Each member's service carries its role, and DNS answers by role once the HTTP checks pass.
    wait_until(lambda: srv_ports("primary") == {n1.pg}, timeout=30, interval=0.2)
    wait_until(lambda: srv_ports("replica") == {n2.pg}, timeout=30, interval=0.2)

    # kill -9 of the primary: its session stops being renewed, Beacon invalidates it (deleting the
    # member key, behaviour "delete") and releases the lock, and the replica promotes itself.
    killed = time.monotonic()
    n1.kill()
    try:
        wait_until(lambda: kv("leader") == b"node2", timeout=90, interval=0.2)
    except AssertionError:
        pytest.fail("node2 did not take over:\n" + n2.tail())
    took = time.monotonic() - killed
    print(f"failover: the replica held the leader lock {took:.1f} s after kill -9 of the primary")
    wait_until(lambda: kv("members/node1") is None, timeout=30, interval=0.2)
    wait_until(lambda: _http_status(f"http://127.0.0.1:{n2.rest}/primary") == 200, timeout=30, interval=0.2)
    wait_until(lambda: n2.sql("SELECT pg_is_in_recovery()") == "f", timeout=30, interval=0.2)
    assert n2.sql("SELECT x FROM t") == "42"
    assert n2.sql("INSERT INTO t VALUES (43)") == "INSERT 0 1"
    wait_until(lambda: srv_ports("primary") == {n2.pg}, timeout=30, interval=0.2)


def test_patroni_keeps_its_primary_when_the_beacon_leader_dies(tmp_path, pg_cluster) -> None:
    """Patroni members talk to client agents of a 3-server cluster; `kill -9` of Beacon's leader server
    must not cost Patroni its lock: its session renewals and status writes go on through the client
    agents, and the primary stays primary for longer than the session could survive without them."""
    from tests.cluster.conftest import start_cluster

    root, scope, members = pg_cluster
    c = start_cluster(tmp_path, clients=2)
    try:
        c1, c2 = c.clients["c1"], c.clients["c2"]
        n1 = Member(root, scope, "node1", c1.http_addr)
        n2 = Member(root, scope, "node2", c2.http_addr)
        members += [n1, n2]

        def kv(key: str) -> dict | None:
            status, _, body = c2.request("GET", f"/v1/kv/service/{scope}/{key}", timeout=5)
            return json.loads(body)[0] if status == 200 else None

        def optime() -> int:
            row = kv("status")
            return int(json.loads(base64.b64decode(row["Value"]))["optime"]) if row and row["Value"] else 0

        n1.start()
        try:
            wait_until(lambda: (kv("leader") or {}).get("Value") == base64.b64encode(b"node1").decode(),
                       timeout=90, interval=0.2)
            wait_until(lambda: _http_status(f"http://127.0.0.1:{n1.rest}/primary") == 200, timeout=30, interval=0.2)
        except AssertionError:
            pytest.fail("node1 did not become the leader:\n" + n1.tail())
        n2.start()
        try:
            wait_until(lambda: _http_status(f"http://127.0.0.1:{n2.rest}/replica") == 200, timeout=90, interval=0.2)
        except AssertionError:
            pytest.fail("node2 did not become a running replica:\n" + n2.tail())
        assert n1.sql("CREATE TABLE t (x int)") == "CREATE TABLE"
        session = kv("leader")["Session"]  # type: ignore[index]

        leader = c.leader()
        c.signal(leader, signal.SIGKILL)
        killed = time.monotonic()
        print(f"killed Beacon's leader server {leader}")

        # Armed: Patroni's writes reach the cluster after the kill (the status key carries the
        # primary's WAL position, which the inserts move).
        before = optime()
        assert n1.sql("INSERT INTO t VALUES (1)") == "INSERT 0 1"
        try:
            wait_until(lambda: optime() > before, timeout=30, interval=0.2)
        except AssertionError:
            pytest.fail("Patroni's status writes did not get through after the server died:\n" + n1.tail())

        # Longer than twice the 10 s session TTL after the kill: the lock and its session stay node1's,
        # node1 stays primary, and its status keeps moving.
        i = 1
        while time.monotonic() - killed < 25:
            i += 1
            mark = optime()
            assert n1.sql(f"INSERT INTO t VALUES ({i})") == "INSERT 0 1"
            wait_until(lambda mark=mark: optime() > mark, timeout=15, interval=0.2)
            row = kv("leader")
            assert row is not None and row["Session"] == session, (row, n1.tail())
            assert _http_status(f"http://127.0.0.1:{n1.rest}/primary") == 200, n1.tail()
        assert "demot" not in open(n1.log, errors="replace").read().lower(), n1.tail()
        wait_until(lambda: n2.sql("SELECT count(*) FROM t") == str(i), timeout=30, interval=0.2)
    finally:
        c.stop_all()
