"""Autopilot's replicated configuration: decoding as Consul's PUT and agent block decode it, the
state-machine command with its check-and-set, snapshot/restore, and the reconciler's rules
(CleanupDeadServers, MinQuorum). Pure: no processes."""

from __future__ import annotations

import json

import pytest

from beacon.agent.reconcile import Reconciler
from beacon.cli.agent import load_config
from beacon.config import AgentConfig, ConfigError, apply_file
from beacon.server import autopilot, sessions
from beacon.server import commands as cmd
from beacon.server.fsm import MessageType, StateStore


def _store() -> StateStore:
    store = StateStore()
    sessions.install(store)
    return store


def test_a_put_body_is_the_whole_configuration_with_consuls_key_and_duration_rules() -> None:
    # Fields left out take their zero values, as Consul's handler decodes into a fresh struct.
    assert autopilot.decode({"cleanup_dead_servers": True, "minquorum": 3}) == {
        "CleanupDeadServers": True, "LastContactThreshold": "0s", "MaxTrailingLogs": 0, "MinQuorum": 3,
        "ServerStabilizationTime": "0s", "RedundancyZoneTag": "", "DisableUpgradeMigration": False,
        "UpgradeVersionTag": ""}
    # Durations as Go strings or nanoseconds, written back in Go's form; a GET's indexes sent back
    # (and any other key) are ignored, as Go's JSON decoder ignores them.
    got = autopilot.decode({"LastContactThreshold": 1_500_000_000, "ServerStabilizationTime": "1m30s",
                            "ModifyIndex": 9, "DeadServerReconnectTimeout": "72h0m0s", "Bogus": 1})
    assert (got["LastContactThreshold"], got["ServerStabilizationTime"]) == ("1.5s", "1m30s")
    assert "ModifyIndex" not in got and "Bogus" not in got
    for body, message in (({"MinQuorum": -1}, "MinQuorum: must be an unsigned integer"),
                          ({"MaxTrailingLogs": 1.5}, "MaxTrailingLogs: must be an unsigned integer"),
                          ({"MaxTrailingLogs": True}, "MaxTrailingLogs: must be an unsigned integer"),
                          ({"CleanupDeadServers": "yes"}, "CleanupDeadServers: must be a boolean"),
                          ({"LastContactThreshold": "soon"}, "LastContactThreshold: invalid duration"),
                          ({"LastContactThreshold": "-1s"}, "LastContactThreshold: must not be negative"),
                          ({"RedundancyZoneTag": 5}, "RedundancyZoneTag: must be a string"),
                          ([1], "must be a JSON object")):
        with pytest.raises(autopilot.AutopilotConfigError, match=message):
            autopilot.decode(body)


def test_the_agent_block_starts_from_consuls_defaults_and_rejects_unknown_keys(tmp_path) -> None:
    cfg = AgentConfig()
    apply_file(cfg, {"autopilot": {"min_quorum": 3, "last_contact_threshold": "1s"}}, "a.json")
    apply_file(cfg, {"autopilot": {"cleanup_dead_servers": False}}, "b.json")  # later files merge in
    assert cfg.autopilot == {**autopilot.DEFAULTS, "MinQuorum": 3, "LastContactThreshold": "1s",
                             "CleanupDeadServers": False}
    for bad in ({"min_quorum": "three"}, {"cleanup_dead_server": True}, "on"):
        with pytest.raises(ConfigError, match="autopilot"):
            apply_file(AgentConfig(), {"autopilot": bad}, "c.json")
    path = tmp_path / "ap.json"
    path.write_text(json.dumps({"autopilot": {"max_trailing_logs": 500}}))
    assert load_config(["-dev", "-config-file", str(path)]).autopilot["MaxTrailingLogs"] == 500


def test_the_command_replaces_the_record_with_check_and_set_and_survives_a_snapshot() -> None:
    store = _store()
    fallback = {**autopilot.DEFAULTS, "MinQuorum": 5}
    # Nothing written yet: the agent's block, with indexes 0, and cas=0 replaces that one.
    assert autopilot.effective(store, fallback) == {**fallback, "CreateIndex": 0, "ModifyIndex": 0}
    assert store.apply(cmd.AutopilotSet(config={"CleanupDeadServers": False}, cas=1), 10).value is False
    assert autopilot.stored(store) is None
    assert store.apply(cmd.AutopilotSet(config={"CleanupDeadServers": False}, cas=0), 11).value is True
    first = autopilot.effective(store, fallback)
    assert (first["CleanupDeadServers"], first["MinQuorum"], first["CreateIndex"], first["ModifyIndex"]) == \
        (False, 0, 11, 11)
    # A stale cas changes nothing; the current one does; no cas always writes.
    assert store.apply(cmd.AutopilotSet(config={"MinQuorum": 2}, cas=10), 12).value is False
    assert store.apply(cmd.AutopilotSet(config={"MinQuorum": 2}, cas=11), 13).value is True
    assert store.apply(cmd.AutopilotSet(config={"MinQuorum": 4, "MaxTrailingLogs": 9}), 14).value is True
    now = autopilot.effective(store, fallback)
    assert (now["MinQuorum"], now["MaxTrailingLogs"], now["CleanupDeadServers"], now["CreateIndex"],
            now["ModifyIndex"]) == (4, 9, False, 11, 14)
    assert store.tables[autopilot.TABLE] == 14
    # The log form decodes on a replica, which checks the values again: a bad entry is an error
    # result there, the same on every replica, and the record is untouched.
    bad = store.apply((MessageType.AUTOPILOT, {"op": "set", "config": {"MinQuorum": -1}, "cas": None}), 15)
    assert bad.error is not None and "MinQuorum" in bad.error.message
    unknown = store.apply((MessageType.AUTOPILOT, {"op": "drop"}), 16)
    assert unknown.error is not None and 'Invalid autopilot operation "drop"' in unknown.error.message
    assert autopilot.effective(store, fallback) == now
    other = _store()
    other.restore(store.snapshot())
    assert autopilot.effective(other, fallback) == now


class _FakeAgent:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    def autopilot_config(self) -> dict:
        return autopilot.effective(self.store, dict(autopilot.DEFAULTS))


def test_the_reconciler_prunes_a_dead_server_only_as_the_configuration_allows(caplog) -> None:
    store = _store()
    rec = Reconciler(_FakeAgent(store), cluster=None)  # type: ignore[arg-type]
    assert rec._may_prune("s3", voters=3)  # Consul's defaults: CleanupDeadServers, no MinQuorum
    store.apply(cmd.AutopilotSet(config={"CleanupDeadServers": False}), 1)
    assert not rec._may_prune("s3", voters=3)
    assert not rec._may_prune("s3", voters=3)
    assert [r.getMessage() for r in caplog.records].count(
        "autopilot: keeping dead server s3: CleanupDeadServers is false") == 1  # said once, not every pass
    store.apply(cmd.AutopilotSet(config={"CleanupDeadServers": True, "MinQuorum": 3}), 2)
    assert not rec._may_prune("s3", voters=3)
    assert "autopilot: keeping dead server s3: it would leave 2 servers, fewer than MinQuorum 3" in caplog.text
    assert rec._may_prune("s3", voters=4)
    store.apply(cmd.AutopilotSet(config={"CleanupDeadServers": True, "MinQuorum": 2}), 3)
    assert rec._may_prune("s3", voters=3) and "s3" not in rec.held
