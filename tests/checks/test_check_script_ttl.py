"""Script and TTL checks."""

import asyncio
import os
import sys

import pytest
from _checks_helpers import process_alive, wait_for_file, wait_gone

from beacon.checks import (
    CheckDefinition,
    CheckScheduler,
    InvalidStatusError,
    NotTTLCheckError,
    UnknownCheckError,
)


def script_check(args, **extra):
    return CheckDefinition.from_json({"ID": "script", "Name": "script", "Args": args, "Interval": "50ms", **extra})


async def test_script_exit_code_drives_status_and_output_is_stdout_plus_stderr(scheduler, recorder, tmp_path):
    code_file = tmp_path / "code"
    code_file.write_text("0")
    script = f'echo "out $(cat {code_file})"; echo "err line" >&2; exit $(cat {code_file})'
    scheduler.add(script_check(["/bin/sh", "-c", script]))
    got = await recorder.wait_status("script", "passing")
    assert got.output == "out 0\nerr line\n"
    for code, status in (("1", "warning"), ("2", "critical"), ("0", "passing"), ("127", "critical")):
        code_file.write_text(code)
        n = len(recorder.of("script"))
        got = await recorder.wait_status("script", status, after=n)
        assert got.output == f"out {code}\nerr line\n"


async def test_script_that_cannot_start_is_critical(scheduler, recorder, tmp_path):
    scheduler.add(script_check([str(tmp_path / "no-such-binary")]))
    got = await recorder.wait_status("script", "critical")
    assert "Failed to invoke check" in got.output


async def test_script_output_keeps_the_tail_and_says_how_much_was_dropped(scheduler, recorder):
    scheduler.add(script_check([sys.executable, "-c", "print('x' * 10000 + 'TAIL')"], OutputMaxSize=100))
    got = await recorder.wait_status("script", "passing")
    head, _, kept = got.output.partition("\n...\n")
    assert head == "Captured 100 of 10005 bytes"
    assert len(kept) == 100 and kept.endswith("TAIL\n")


async def test_script_timeout_kills_the_whole_process_group(scheduler, recorder, tmp_path):
    pid_file = tmp_path / "child.pid"
    # The script starts a grandchild, records its PID and waits: both must die at the timeout.
    script = f'echo started; sleep 30 & echo $! > {pid_file}; wait'
    scheduler.add(script_check(["/bin/sh", "-c", script], Timeout="300ms", Interval="500ms"))
    pid = int(await wait_for_file(str(pid_file)))
    assert process_alive(pid)
    got = await recorder.wait_status("script", "critical", timeout=5)
    assert got.output == "Timed out (300ms) running check\n\nstarted\n"
    assert await wait_gone(pid)


async def test_removing_a_check_kills_its_running_script(scheduler, recorder, tmp_path):
    pid_file = tmp_path / "child.pid"
    scheduler.add(script_check(["/bin/sh", "-c", f"sleep 30 & echo $! > {pid_file}; wait"], Timeout="20s"))
    pid = int(await wait_for_file(str(pid_file)))
    assert scheduler.remove("script") is True
    assert "script" not in scheduler
    async with asyncio.timeout(5):
        await scheduler.stop()
    assert await wait_gone(pid)
    assert recorder.of("script") == []  # a cancelled run reports nothing
    assert scheduler.remove("script") is False


async def test_runs_of_a_slow_script_never_overlap(scheduler, recorder, tmp_path):
    lock = tmp_path / "lock"
    log = tmp_path / "log"
    # Fails (exit 2) if another run holds the lock: overlapping runs would show up as critical.
    script = (f'if [ -e {lock} ]; then exit 2; fi; touch {lock}; echo run >> {log}; '
              f'sleep 0.15; rm {lock}')
    scheduler.add(script_check(["/bin/sh", "-c", script], Interval="50ms"))
    await recorder.wait_until(lambda: len(recorder.of("script")) >= 4)
    assert {u.status for u in recorder.of("script")} == {"passing"}
    assert scheduler.stats.skipped_slots > 0


async def test_ttl_check_expires_to_critical_with_last_output(scheduler, recorder):
    scheduler.add(CheckDefinition.from_json({"Name": "app", "TTL": "200ms"}))
    assert recorder.of("app") == []  # the initial status is the agent's to record
    stored = scheduler.ttl_update("app", "passing", "all good")
    assert stored == "all good"
    assert [(u.status, u.output) for u in recorder.of("app")] == [("passing", "all good")]
    got = await recorder.wait_status("app", "critical", timeout=2)
    assert got.output == "TTL expired (last output before timeout follows): all good"
    assert got.at - recorder.of("app")[0].at == pytest.approx(0.2, abs=0.15)
    assert scheduler.ttl_expires_at("app") is None


async def test_ttl_without_any_update_expires_with_plain_message(scheduler, recorder):
    scheduler.add(CheckDefinition.from_json({"Name": "app", "TTL": "100ms", "Status": "passing"}))
    got = await recorder.wait_status("app", "critical", timeout=2)
    assert got.output == "TTL expired"


async def test_ttl_updates_keep_the_check_alive(scheduler, recorder):
    scheduler.add(CheckDefinition.from_json({"Name": "app", "TTL": "500ms"}))
    loop = asyncio.get_running_loop()
    for i in range(12):  # 12 updates 100 ms apart: 1.2 s, more than two TTLs
        scheduler.ttl_update("app", "warning", f"beat {i}")
        expires = scheduler.ttl_expires_at("app")
        assert expires == pytest.approx(loop.time() + 0.5, abs=0.01)
        await asyncio.sleep(0.1)
    assert {u.status for u in recorder.of("app")} == {"warning"}
    got = await recorder.wait_status("app", "critical", timeout=2)
    assert got.output.endswith("beat 11")


async def test_ttl_update_output_is_capped(scheduler, recorder):
    scheduler.add(CheckDefinition.from_json({"Name": "app", "TTL": "10s", "OutputMaxSize": 10}))
    stored = scheduler.ttl_update("app", "passing", "0123456789abcdef")
    assert stored == "0123456789 ... (captured 10 of 16 bytes)"


async def test_ttl_update_errors_are_specific(scheduler, recorder):
    scheduler.add(CheckDefinition.from_json({"Name": "app", "TTL": "10s"}))
    scheduler.add(CheckDefinition.from_json({"Name": "tcp", "TCP": "127.0.0.1:1", "Interval": "10s"}))
    with pytest.raises(UnknownCheckError, match='Unknown check ID "nope"'):
        scheduler.ttl_update("nope", "passing", "")
    with pytest.raises(NotTTLCheckError, match='CheckID "tcp" does not have associated TTL'):
        scheduler.ttl_update("tcp", "passing", "")
    with pytest.raises(InvalidStatusError, match="Invalid check status: 'fine'"):
        scheduler.ttl_update("app", "fine", "")
    assert recorder.of("app") == []


async def test_removed_ttl_check_never_expires(scheduler, recorder):
    scheduler.add(CheckDefinition.from_json({"Name": "app", "TTL": "50ms"}))
    scheduler.remove("app")
    await asyncio.sleep(0.2)  # four TTLs: an expiry would have fired by now
    assert recorder.of("app") == []


def test_process_alive_helper_sees_this_process():
    assert process_alive(os.getpid())


async def test_removal_while_a_script_is_starting_leaves_no_children(recorder, tmp_path):
    # The process exists a little before the subprocess API returns it; removing the check in that
    # window once left the script's children running (and stop() waiting on their pipe).
    survivors = []
    for i in range(30):
        sched = CheckScheduler(recorder, min_interval=0.001)
        pid_file = tmp_path / f"p{i}"
        sched.add(script_check(["/bin/sh", "-c", f"sleep 30 & echo $! > {pid_file}; wait"],
                               Interval="1ms", Timeout="20s"))
        await asyncio.sleep(0.0005 * (i % 15))  # remove at moments around the spawn
        sched.remove("script")
        async with asyncio.timeout(5):
            await sched.stop()
        await asyncio.sleep(0.02)  # a child spawned just before the kill has written its PID
        if pid_file.exists() and pid_file.read_text().strip():
            pid = int(pid_file.read_text())
            if not await wait_gone(pid):
                survivors.append(pid)
                os.kill(pid, 9)
    assert survivors == []
