"""A -dev agent keeps its serf data in a temporary directory; a `kill -9` leaves it behind, and the next
-dev agent removes the directories of agents that no longer run (and nothing else)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from beacon.gossip.pools import OWNER_FILE, TMP_PREFIX, sweep_stale_tmpdirs
from tests.conftest import beacon_env, launch, wait_until
from tests.gossip.conftest import needs_serf


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _make(root, name: str, owner: str | None) -> str:
    path = os.path.join(str(root), TMP_PREFIX + name)
    os.makedirs(os.path.join(path, "serf"))
    if owner is not None:
        with open(os.path.join(path, OWNER_FILE), "w") as f:
            f.write(owner)
    return path


def test_sweep_removes_only_directories_whose_owner_is_gone(tmp_path) -> None:
    dead = _make(tmp_path, "dead", f"{_dead_pid()}\n")
    alive = _make(tmp_path, "alive", f"{os.getpid()}\n")
    unowned = _make(tmp_path, "unowned", None)  # being created, or from an older version
    garbage = _make(tmp_path, "garbage", "12x\n")
    huge = _make(tmp_path, "huge", "9" * 30)
    other = os.path.join(str(tmp_path), "someone-else")
    os.makedirs(other)
    with open(os.path.join(other, OWNER_FILE), "w") as f:
        f.write(f"{_dead_pid()}\n")
    link = os.path.join(str(tmp_path), TMP_PREFIX + "link")
    os.symlink(dead, link)

    assert sweep_stale_tmpdirs(str(tmp_path)) == 1
    assert not os.path.exists(dead)
    for kept in (alive, unowned, garbage, huge, other):
        assert os.path.isdir(kept), kept
    assert os.path.islink(link)  # a link is never followed, whatever it points at
    assert sweep_stale_tmpdirs(str(tmp_path / "missing")) == 0


@needs_serf
def test_a_dev_agent_removes_what_a_killed_dev_agent_left(tmp_path) -> None:
    env = {**beacon_env(), "TMPDIR": str(tmp_path)}

    def owned_by(pid: int) -> list[str]:
        out = []
        for name in os.listdir(tmp_path):
            try:
                with open(os.path.join(tmp_path, name, OWNER_FILE)) as f:
                    if f.read().strip() == str(pid):
                        out.append(name)
            except OSError:
                continue
        return out

    first = launch(env=env)
    left = wait_until(lambda: owned_by(first.proc.pid), timeout=10)
    assert len(left) == 1 and left[0].startswith(TMP_PREFIX)
    first.stop(signal.SIGKILL)
    assert os.path.isdir(os.path.join(tmp_path, left[0]))  # armed: the kill left it behind

    second = launch(env=env)
    try:
        assert not os.path.exists(os.path.join(tmp_path, left[0]))
        assert len(owned_by(second.proc.pid)) == 1
    finally:
        second.stop()
    assert owned_by(second.proc.pid) == []  # a clean stop removes its own
