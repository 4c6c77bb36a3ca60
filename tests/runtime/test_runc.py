"""The runc engine on its own: what `docker info` says about each mode, and recovery after the engine
was killed with containers running (no leftover container, process or mount)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from .helpers import RUNC, RUNC_REASON, ensure_busybox, start_engine, stop_engine, until

pytestmark = pytest.mark.skipif(not RUNC, reason=RUNC_REASON)


def test_info_reports_runc_and_process_mode_warns(tmp_path: Path) -> None:
    e = start_engine(tmp_path / "a", "runc")
    try:
        info = json.loads(e.docker("info", "--format", "{{json .}}").stdout)
        assert info["Isolation"] == "runc" and info["DefaultRuntime"] == "runc" and info["Warnings"] == []
    finally:
        stop_engine(e.proc)
    p = start_engine(tmp_path / "b", "process")
    try:
        info = json.loads(p.docker("info", "--format", "{{json .}}").stdout)
        assert info["Isolation"] == "process"
        assert any("host filesystem" in w for w in info["Warnings"])
        res = p.docker("run", "--rm", "-t", "busybox", "true", check=False)
        assert res.returncode != 0 and "need runc isolation" in res.stderr
    finally:
        stop_engine(p.proc)


def test_a_killed_engine_leaves_nothing_running(tmp_path: Path) -> None:
    e = start_engine(tmp_path, "runc")
    try:
        ensure_busybox(e.url, tmp_path)
        e.docker("run", "-d", "--name", "orphan", "busybox", "sleep", "300")
        pid = e.inspect("orphan")["State"]["Pid"]
        assert pid > 0 and os.path.exists(f"/proc/{pid}")
        rootfs = e.data_dir / "containers" / e.inspect("orphan")["Id"] / "bundle" / "rootfs"
        assert os.path.ismount(rootfs)
        e.proc.send_signal(signal.SIGKILL)
        e.proc.wait(timeout=10)
        assert os.path.exists(f"/proc/{pid}")  # runc and its container outlive the engine...
    finally:
        stop_engine(e.proc)
    again = start_engine(tmp_path, "runc")
    try:
        state = again.inspect("orphan")["State"]
        assert state["Status"] == "exited" and state["ExitCode"] == 137
        until(lambda: not os.path.exists(f"/proc/{pid}"), 20, "the orphaned container killed")  # ... not the restart
        listed = subprocess.run(["runc", "--root", str(again.data_dir / "runc"), "list", "-q"],
                                capture_output=True, text=True, timeout=30)
        assert listed.stdout.split() == [] and not os.path.ismount(rootfs)
        again.docker("start", "orphan")  # and it can run again
        assert again.inspect("orphan")["State"]["Running"] is True
        again.docker("rm", "-f", "orphan")
    finally:
        stop_engine(again.proc)
