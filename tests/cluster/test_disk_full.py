"""A server whose data dir fills up: writes through it get errors (never an acknowledgement that was not
made durable), the agent stays up and keeps answering, writes resume once space is freed, and the
server restarts cleanly. Its data dir is a small tmpfs this test mounts (root only)."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests.cluster.conftest import Cluster, _block
from tests.conftest import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.integration]

VALUE = "v" * 8192


def put(agent, key: str) -> int:
    try:
        status, _, body = agent.request("PUT", f"/v1/kv/{key}", VALUE, timeout=20)
    except OSError:
        return 0
    return 200 if status == 200 and body == b"true" else status


def test_a_full_disk_refuses_writes_keeps_serving_resumes_and_restarts_cleanly(tmp_path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    c = Cluster(str(tmp_path), _block())
    small = tmp_path / "s1"
    small.mkdir()
    # etcd preallocates 64 MiB WAL segments: leave room for one, then fill the rest below
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100m", "tmpfs", str(small)], capture_output=True,
                             text=True, timeout=20)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        c.start_together(servers=("s1", "s2", "s3"))
        c.leader()
        s1, s2 = c.servers["s1"], c.servers["s2"]
        wait_until(lambda: put(s1, "full/warmup") == 200, timeout=20)
        filler = small / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True, timeout=60)
        acked: list[str] = []
        refused: list[int] = []
        for i in range(400):
            status = put(s1, f"full/{i}")
            if status == 200:
                acked.append(f"full/{i}")
            else:
                refused.append(status)
                if len(refused) >= 2:
                    break
        assert len(refused) >= 2, f"the full disk never refused a write ({len(acked)} acknowledged)"
        # each refusal is an error answer within the client's 20 s, not a hang (a write committed just
        # before the member crashed waits a bounded time for this server's apply)
        assert all(500 <= s < 600 for s in refused), refused
        # the agent is up and still answers (stale reads, status), and the others still commit
        assert s1.proc.poll() is None
        assert s1.request("GET", "/v1/kv/full/warmup?stale", timeout=10)[0] == 200
        assert put(s2, "full/via-s2") == 200
        # space returns: writes through s1 work again without a restart
        os.unlink(filler)
        wait_until(lambda: put(s1, "full/after") == 200, timeout=60, interval=0.5)
        # clean restart after the ordeal; nothing acknowledged was lost
        s1.stop(signal.SIGKILL)
        c.start_server("s1")
        s1 = c.servers["s1"]
        for agent in (s1, s2):
            status, _, body = agent.request("GET", "/v1/kv/full/?keys&consistent", timeout=20)
            assert status == 200
            keys = set(__import__("json").loads(body))
            missing = set(acked) - keys
            assert not missing, sorted(missing)[:5]
            assert {"full/after", "full/via-s2"} <= keys
        print(f"{len(acked)} writes acknowledged before the disk filled; all present after restart")
    finally:
        c.stop_all()
        subprocess.run(["umount", "-l", str(small)], capture_output=True, timeout=20)
