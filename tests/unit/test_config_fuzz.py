"""Generated agent config files: the agent starts with them or refuses them with a ConfigError,
never with another exception (a traceback instead of a message).

The base file sets every block Beacon reads (ports, addresses, DNS, limits, HTTP, engine,
registrator, TLS, ACLs, services, checks, node meta, durations); hypothesis replaces, removes or
adds fields anywhere in it with JSON of the wrong kind, and :func:`beacon.cli.agent.load_config`
reads it as ``beacon agent -dev -config-file`` would.
"""

from __future__ import annotations

import json
import os
import tempfile

from hypothesis import HealthCheck, given, settings

from beacon.cli.agent import load_config
from beacon.config import ConfigError
from tests.integration.test_api_fuzz import bodies

BASE = {
    "datacenter": "dc1", "node_name": "fz", "server": True, "bootstrap_expect": 1, "bind_addr": "127.0.0.1",
    "client_addr": "127.0.0.1", "domain": "consul", "recursors": ["127.0.0.53"], "log_level": "info",
    "ports": {"http": 8500, "dns": 8600, "https": -1, "grpc": -1, "serf_lan": 8301},
    "addresses": {"http": "127.0.0.1", "dns": "127.0.0.1"},
    "dns_config": {"allow_stale": True, "max_stale": "87600h", "node_ttl": "10s",
                   "service_ttl": {"*": "5s", "web": "30s"}, "udp_answer_limit": 3, "only_passing": False,
                   "enable_truncate": True, "a_record_limit": 0, "soa": {"expire": 86400, "min_ttl": 0}},
    "limits": {"kv_max_value_size": 524288, "http_max_conns_per_client": 200},
    "http_config": {"read_header_timeout": "10s", "idle_timeout": "60s"},
    "engine": {"enabled": False, "isolation": "auto"},
    "registrator": {"enabled": False, "deregister": "always", "resync": 0, "internal": False},
    "tls": {"defaults": {"verify_incoming": False, "verify_outgoing": False}, "https": {}},
    "acl": {"enabled": False, "default_policy": "allow", "down_policy": "extend-cache", "token_ttl": "30s",
            "tokens": {"initial_management": "", "default": "", "agent": "", "dns": ""},
            "enable_token_persistence": False},
    "services": [{"name": "web", "id": "web1", "port": 80, "tags": ["a"], "meta": {"k": "v"},
                  "check": {"ttl": "30s"}, "checks": [{"name": "t", "http": "http://127.0.0.1:1/", "interval": "10s"}],
                  "weights": {"passing": 1, "warning": 1}}],
    "checks": [{"id": "ttl1", "name": "ttl", "ttl": "10s"}],
    "node_meta": {"rack": "r1"}, "retry_join": [], "retry_interval": "30s", "reconnect_timeout": "72h",
    "tombstone_ttl": "15m", "check_update_interval": "5m", "default_query_time": "300s", "max_query_time": "600s",
    "session_ttl_min": "10s", "leave_on_terminate": False, "enable_script_checks": False, "ui_config": {"enabled": True},
}


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=bodies([("", "", BASE)]))
def test_generated_config_files_load_or_raise_a_config_error(case) -> None:
    _, _, doc = case
    fd, path = tempfile.mkstemp(suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        try:
            load_config(["-dev", "-config-file", path])
        except ConfigError as exc:
            assert str(exc)  # a message the operator can read
    finally:
        os.unlink(path)


def test_the_base_file_loads() -> None:
    """Armed: the unmutated file is accepted, so every mutation starts from a working config."""
    fd, path = tempfile.mkstemp(suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(BASE, f)
        cfg = load_config(["-dev", "-config-file", path])
        assert cfg.node_name == "fz" and cfg.services and cfg.checks
    finally:
        os.unlink(path)
