"""Agent flags and config keys of membership on Serf (issue 12)."""

from __future__ import annotations

import json
import logging

import pytest

from beacon.cli.agent import load_config
from beacon.config import ConfigError


def test_bootstrap_is_its_own_flag_and_joins_parse(tmp_path) -> None:
    cfg = load_config(["-server", "-bootstrap", "-data-dir", str(tmp_path), "-join", "10.0.0.1",
                       "-retry-join-wan", "10.0.1.1", "-join-wan", "10.0.2.1", "-retry-interval", "2s", "-rejoin",
                       "-serf-wan-port", "9302", "-server-rpc-port", "9303", "-serf-bin", "/usr/bin/serf"])
    assert cfg.bootstrap and cfg.bootstrap_expect == 1  # Consul: a one-server quorum
    assert (cfg.join, cfg.retry_join_wan, cfg.join_wan) == (["10.0.0.1"], ["10.0.1.1"], ["10.0.2.1"])
    assert (cfg.retry_interval, cfg.rejoin, cfg.serf_wan_port, cfg.server_rpc_port, cfg.serf_bin) == \
        (2.0, True, 9302, 9303, "/usr/bin/serf")
    assert load_config(["-server", "-bootstrap-expect", "3", "-data-dir", str(tmp_path)]).bootstrap is False


def test_bootstrap_needs_a_server_and_excludes_an_expect_above_one(tmp_path) -> None:
    with pytest.raises(ConfigError, match="server mode"):
        load_config(["-bootstrap", "-data-dir", str(tmp_path)])
    with pytest.raises(ConfigError, match="mutually exclusive"):
        load_config(["-server", "-bootstrap", "-bootstrap-expect", "3", "-data-dir", str(tmp_path)])


def test_config_file_keys(tmp_path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"start_join": ["a"], "retry_join": ["b"], "start_join_wan": ["c"],
                                "retry_join_wan": ["d"], "retry_interval": "5s", "rejoin_after_leave": True,
                                "server": True, "bootstrap": True,
                                "ports": {"serf_wan": 18302, "server_rpc": 18303}}))
    cfg = load_config(["-config-file", str(path), "-data-dir", str(tmp_path)])
    assert (cfg.join, cfg.retry_join, cfg.join_wan, cfg.retry_join_wan) == (["a"], ["b"], ["c"], ["d"])
    assert (cfg.retry_interval, cfg.rejoin, cfg.bootstrap, cfg.serf_wan_port, cfg.server_rpc_port) == \
        (5.0, True, True, 18302, 18303)


def test_failure_timeout_is_accepted_with_a_deprecation_warning(tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        load_config(["-failure-timeout", "3s", "-data-dir", str(tmp_path)])
    assert any("-failure-timeout is deprecated" in r.getMessage() for r in caplog.records)
