"""A single server whose data dir fills up: writes are refused with an error and never acknowledged,
reads go on, writes resume once space returns, and a kill -9 afterwards restarts cleanly with every
acknowledged write."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests.conftest import launch

pytestmark = pytest.mark.integration


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_dev_data_dir_on_a_full_disk_refuses_writes_and_recovers(small_disk) -> None:
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * (1024 * 1024))  # freed later to give the agent room again
    data_dir = str(small_disk / "data")
    agent = launch("-data-dir", data_dir)
    try:
        value = os.urandom(48 * 1024)
        acked: dict[str, bytes] = {}
        refusal = None
        for i in range(200):
            key = f"fill/{i}"
            status, _, body = agent.request("PUT", f"/v1/kv/{key}", value)
            if status == 200:
                assert body.strip() == b"true"
                acked[key] = value
                continue
            refusal = (status, body)
            break
        assert refusal is not None, "the disk never filled up"
        assert len(acked) >= 5  # the writes went through until the disk was full
        status, body = refusal
        assert status == 500 and b"No space left on device" in body, refusal
        # Refused again while full; the agent stays up and readable.
        status, _, body = agent.request("PUT", "/v1/kv/while-full", value)
        assert status == 500, (status, body)
        assert agent.proc.poll() is None
        for key, val in list(acked.items())[-3:]:
            status, _, body = agent.request("GET", f"/v1/kv/{key}?raw")
            assert (status, body) == (200, val)
        status, _, _ = agent.request("GET", "/v1/kv/while-full")
        assert status == 404  # the refused write never took effect

        ballast.unlink()
        status, _, body = agent.request("PUT", "/v1/kv/after-space", b"back")
        assert (status, body.strip()) == (200, b"true"), (status, body)
        acked["after-space"] = b"back"
    finally:
        agent.stop(signal.SIGKILL)

    again = launch("-data-dir", data_dir)
    try:
        for key, val in acked.items():
            status, _, body = again.request("GET", f"/v1/kv/{key}?raw")
            assert (status, body) == (200, val), key
        status, _, _ = again.request("GET", "/v1/kv/while-full")
        assert status == 404
        status, _, body = again.request("PUT", "/v1/kv/after-restart", b"ok")
        assert status == 200, (status, body)
    finally:
        again.stop(signal.SIGKILL)
