"""beacon.agent.hostinfo: Consul's /v1/agent/host document, and a part that cannot be read."""

from __future__ import annotations

import os

from beacon.agent import hostinfo


def test_every_part_is_read_from_this_machine() -> None:
    info = hostinfo.collect()
    assert info["Errors"] is None
    assert info["Memory"]["total"] >= info["Memory"]["available"] > 0
    assert 0.0 <= info["Memory"]["usedPercent"] <= 100.0
    assert [c["cpu"] for c in info["CPU"]] == list(range(os.cpu_count() or 1))
    assert info["Host"]["uptime"] > 0 and info["Host"]["os"] == "linux"
    assert 0.0 <= info["Disk"]["usedPercent"] <= 100.0


def test_a_part_that_fails_is_null_and_named_in_errors(monkeypatch) -> None:
    def broken() -> dict:
        raise OSError("no /proc/meminfo here")

    monkeypatch.setattr(hostinfo, "memory", broken)
    info = hostinfo.collect()
    assert info["Memory"] is None
    assert info["Errors"] == ["memory: no /proc/meminfo here"]
    assert info["Host"] is not None and info["CPU"]  # the others are still there
