"""`beacon lock`, `beacon watch`, `beacon snapshot` and `beacon kv export|import` against a real agent."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import beacon_cmd, beacon_env, launch, wait_until


@pytest.fixture(scope="module")
def agent():
    proc = launch()
    yield proc
    proc.stop()


def cli(agent, *args: str, timeout: float = 20.0, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(beacon_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          env=beacon_env(CONSUL_HTTP_ADDR=agent.http_addr), **kw)


def spawn(agent, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(beacon_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=beacon_env(CONSUL_HTTP_ADDR=agent.http_addr), start_new_session=True)


def kv_entry(agent, key: str) -> dict | None:
    status, _, body = agent.request("GET", "/v1/kv/" + key)
    return json.loads(body)[0] if status == 200 else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def finish(proc: subprocess.Popen[str], timeout: float = 10.0) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=5)
        raise AssertionError(f"process did not finish in {timeout}s: {err}") from None
    return proc.returncode, out, err


def test_lock_runs_the_child_under_the_lock_and_releases_it(agent, tmp_path) -> None:
    out = tmp_path / "held"
    script = f'echo "$CONSUL_LOCK_HELD" > {out}; curl -s http://{agent.http_addr}/v1/kv/jobs/a/.lock >> {out}'
    if subprocess.run(["which", "curl"], capture_output=True).returncode != 0:
        script = f'echo "$CONSUL_LOCK_HELD" > {out}'
    res = cli(agent, "lock", "jobs/a", script)
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    assert text.startswith("true")
    if "curl" in script:
        held = json.loads(text.split("\n", 1)[1])[0]
        assert held["Session"] and held["Flags"] == 0x2DDCCBC058A50C18
    entry = kv_entry(agent, "jobs/a/.lock")
    assert entry is not None and "Session" not in entry
    sessions = agent.json("GET", "/v1/session/list")
    assert not [s for s in sessions if "jobs/a" in s["Name"]]


def test_lock_kills_the_child_when_the_lock_is_lost(agent, tmp_path) -> None:
    pidfile = tmp_path / "pid"
    proc = spawn(agent, "lock", "jobs/b", f"echo $$ > {pidfile}; exec sleep 30")
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=10)
    pid = int(pidfile.read_text())
    assert alive(pid)
    entry = kv_entry(agent, "jobs/b/.lock")
    assert entry and entry.get("Session")
    assert agent.json("PUT", f"/v1/session/destroy/{entry['Session']}") is True
    code, _, err = finish(proc, timeout=10)
    assert code == 1 and "Lock lost" in err
    assert not alive(pid)


def test_lock_second_holder_waits_for_the_first(agent, tmp_path) -> None:
    log = tmp_path / "log"
    first = spawn(agent, "lock", "jobs/c", f"echo start1 >> {log}; sleep 1; echo end1 >> {log}")
    wait_until(lambda: log.exists() and "start1" in log.read_text(), timeout=10)
    second = spawn(agent, "lock", "jobs/c", f"echo start2 >> {log}")
    assert finish(first)[0] == 0 and finish(second)[0] == 0
    assert log.read_text().split() == ["start1", "end1", "start2"]


def test_semaphore_allows_n_holders_and_no_more(agent, tmp_path) -> None:
    slots = tmp_path / "slots"
    slots.mkdir()
    counts = tmp_path / "counts"
    script = f"mkdir {slots}/$$; sleep 0.7; ls {slots} | wc -l >> {counts}; rmdir {slots}/$$"
    procs = [spawn(agent, "lock", "-n", "2", "sem/x", script) for _ in range(3)]
    for p in procs:
        code, _, err = finish(p, timeout=15)
        assert code == 0, err
    seen = [int(x) for x in counts.read_text().split()]
    assert len(seen) == 3 and max(seen) == 2


def test_watch_runs_the_handler_once_per_real_change(agent, tmp_path) -> None:
    out = tmp_path / "calls"
    proc = spawn(agent, "watch", "-type", "key", "-key", "w/k", f"cat >> {out}; echo '#END' >> {out}")

    def calls() -> list[str]:
        return [c for c in (out.read_text().split("#END") if out.exists() else []) if c.strip()]

    try:
        wait_until(lambda: len(calls()) == 1, timeout=10)  # the initial view: no key yet
        assert json.loads(calls()[0]) is None
        agent.request("PUT", "/v1/kv/w/k", "v1")
        wait_until(lambda: len(calls()) == 2, timeout=10)
        agent.request("PUT", "/v1/kv/w/k", "v1")      # same value: nothing changed
        agent.request("PUT", "/v1/kv/w/other", "x")   # unrelated key
        agent.request("PUT", "/v1/kv/w/k", "v2")
        wait_until(lambda: len(calls()) == 3, timeout=10)
        time.sleep(0.5)
        assert len(calls()) == 3
        assert base64.b64decode(json.loads(calls()[2])["Value"]) == b"v2"
        agent.request("DELETE", "/v1/kv/w/k")
        wait_until(lambda: len(calls()) == 4, timeout=10)
        assert json.loads(calls()[3]) is None
    finally:
        proc.send_signal(signal.SIGTERM)
        finish(proc, timeout=10)


def test_watch_keyprefix_and_services_print_once_without_handler(agent) -> None:
    agent.request("PUT", "/v1/kv/wp/a", "1")
    res = cli(agent, "watch", "-type", "keyprefix", "-prefix", "wp/")
    assert res.returncode == 0 and [e["Key"] for e in json.loads(res.stdout)] == ["wp/a"]
    res = cli(agent, "watch", "-type", "services")
    assert res.returncode == 0 and "consul" in json.loads(res.stdout)
    assert cli(agent, "watch", "-type", "key").returncode == 1


def test_snapshot_save_inspect_restore(agent, tmp_path) -> None:
    snap = tmp_path / "backup.snap"
    agent.request("PUT", "/v1/kv/snapcli/k", "before")
    res = cli(agent, "snapshot", "save", str(snap))
    assert res.returncode == 0 and res.stdout.startswith("Saved and verified snapshot to index ")
    res = cli(agent, "snapshot", "inspect", str(snap))
    assert res.returncode == 0 and "KV" in res.stdout
    agent.request("PUT", "/v1/kv/snapcli/k", "after")
    res = cli(agent, "snapshot", "restore", str(snap))
    assert res.returncode == 0 and "Restored snapshot" in res.stdout
    assert base64.b64decode(kv_entry(agent, "snapcli/k")["Value"]) == b"before"
    damaged = tmp_path / "damaged.snap"
    data = snap.read_bytes()
    damaged.write_bytes(data[:len(data) // 2])
    res = cli(agent, "snapshot", "restore", str(damaged))
    assert res.returncode == 1 and "Error verifying snapshot" in res.stderr


def test_kv_export_import_roundtrip(agent) -> None:
    agent.request("PUT", "/v1/kv/exp/a?flags=42", "alpha")
    agent.request("PUT", "/v1/kv/exp/bin", b"\x00\xff\x10")
    agent.request("PUT", "/v1/kv/exp/empty", b"")
    res = cli(agent, "kv", "export", "exp/")
    assert res.returncode == 0
    exported = json.loads(res.stdout)
    assert [e["key"] for e in exported] == ["exp/a", "exp/bin", "exp/empty"]
    agent.request("DELETE", "/v1/kv/exp/?recurse")
    res = cli(agent, "kv", "import", "-", input=res.stdout)
    assert res.returncode == 0, res.stderr
    a = kv_entry(agent, "exp/a")
    assert a["Flags"] == 42 and base64.b64decode(a["Value"]) == b"alpha"
    assert base64.b64decode(kv_entry(agent, "exp/bin")["Value"]) == b"\x00\xff\x10"
    assert kv_entry(agent, "exp/empty") is not None


def test_lock_stops_the_child_and_releases_on_sigterm(agent, tmp_path) -> None:
    pidfile = tmp_path / "pid"
    proc = spawn(agent, "lock", "jobs/d", f"echo $$ > {pidfile}; exec sleep 30")
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=10)
    pid = int(pidfile.read_text())
    proc.send_signal(signal.SIGTERM)
    code, _, _ = finish(proc, timeout=10)
    assert code == 1 and not alive(pid)
    entry = kv_entry(agent, "jobs/d/.lock")
    assert entry is not None and "Session" not in entry


def test_lock_passes_flags_after_prefix_to_the_child_and_reports_its_failure(agent, tmp_path) -> None:
    out = tmp_path / "out"
    res = cli(agent, "lock", "-shell=false", "jobs/e", "sh", "-c", f"echo $CONSUL_LOCK_HELD > {out}")
    assert res.returncode == 0, res.stderr
    assert out.read_text().strip() == "true"
    assert cli(agent, "lock", "-child-exit-code", "jobs/e", "exit 3").returncode == 2
    assert cli(agent, "lock", "jobs/e", "exit 3").returncode == 0


def test_semaphore_holder_is_killed_when_its_session_dies(agent, tmp_path) -> None:
    pidfile = tmp_path / "pid"
    proc = spawn(agent, "lock", "-n", "3", "sem/y", f"echo $$ > {pidfile}; exec sleep 30")
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=10)
    pid = int(pidfile.read_text())
    keys = json.loads(agent.request("GET", "/v1/kv/sem/y/?keys")[2])
    contender = next(k for k in keys if not k.endswith("/.lock"))
    assert agent.json("PUT", "/v1/session/destroy/" + contender.rsplit("/", 1)[1]) is True
    code, _, err = finish(proc, timeout=10)
    assert code == 1 and "Lock lost" in err and not alive(pid)


def test_lock_timeout_gives_up_while_another_holds_it(agent, tmp_path) -> None:
    started = tmp_path / "started"
    holder = spawn(agent, "lock", "jobs/f", f"touch {started}; exec sleep 30")
    try:
        wait_until(started.exists, timeout=10)
        t0 = time.monotonic()
        res = cli(agent, "lock", "-timeout", "1s", "jobs/f", "true")
        assert res.returncode == 1 and 0.9 <= time.monotonic() - t0 < 15
        sessions = agent.json("GET", "/v1/session/list")
        assert len([s for s in sessions if "jobs/f" in s["Name"]]) == 1  # the loser cleaned up
    finally:
        holder.send_signal(signal.SIGTERM)
        finish(holder)


def test_watch_passes_the_handlers_flags_to_the_handler(agent, tmp_path) -> None:
    out = tmp_path / "seen"
    cli(agent, "kv", "put", "watched/k", "v1")
    proc = subprocess.Popen(beacon_cmd("watch", "-http-addr", agent.http_addr, "-type", "key", "-key", "watched/k",
                                       "-shell=false", "sh", "-c", f"cat > {out}"),
                            env=beacon_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: out.exists() and "watched/k" in out.read_text(), timeout=15)
    finally:
        proc.terminate()
        proc.wait(10)
