"""Autopilot's configuration: Consul's replicated ``AutopilotConfig``.

The configuration is one record in Consul's JSON shape (``CleanupDeadServers``,
``LastContactThreshold``, ``MaxTrailingLogs``, ``MinQuorum``, ``ServerStabilizationTime``,
``RedundancyZoneTag``, ``DisableUpgradeMigration``, ``UpgradeVersionTag``, ``CreateIndex``,
``ModifyIndex``; durations as Go duration strings) in ``store.extra["autopilot"]["config"]``.
Command ``(MessageType.AUTOPILOT, {"op": "set", "config": {...}, "cas": N | None})``: replace the
whole record; with ``cas``, only if the stored record's ModifyIndex is N. The result is
``True``/``False``.

Until an operator writes one, the configuration is the one built from the server's own agent
configuration (the ``autopilot`` block, Consul's defaults otherwise), with indexes 0; ``cas=0``
replaces that one. Consul's leader writes its agent's block into the state at bootstrap; Beacon
reads it lazily instead, so no server adds a log entry for it. Servers of one datacenter are meant
to carry the same block, as in Consul.

``PUT /v1/operator/autopilot/configuration`` decodes its body as Consul does: the body is the whole
new configuration, and a field left out takes its zero value (``false``, ``0``, ``"0s"``, ``""``).

What Beacon's autopilot acts on (``beacon.agent.reconcile``): ``CleanupDeadServers`` (failed
servers are removed from etcd's membership after ``reconnect_timeout``; ``false`` keeps them) and
``MinQuorum`` (no dead server is removed if fewer than that many would remain). The other fields are
stored and reported: etcd has no non-voting members to stabilise, and its health is its own.
"""

from __future__ import annotations

from typing import Any

from beacon.durations import DurationError, format_duration, parse_duration
from beacon.numbers import UINT64_MAX
from beacon.server import commands as cmd
from beacon.server.fsm import StateStore

TABLE = "autopilot"
ROW = "config"
WATCH_KEY = "autopilot"

# Consul's field names, in the order it writes them, with its defaults.
DEFAULTS: dict[str, Any] = {
    "CleanupDeadServers": True,
    "LastContactThreshold": "200ms",
    "MaxTrailingLogs": 250,
    "MinQuorum": 0,
    "ServerStabilizationTime": "10s",
    "RedundancyZoneTag": "",
    "DisableUpgradeMigration": False,
    "UpgradeVersionTag": "",
}
_ZERO: dict[str, Any] = {"CleanupDeadServers": False, "LastContactThreshold": "0s", "MaxTrailingLogs": 0,
                         "MinQuorum": 0, "ServerStabilizationTime": "0s", "RedundancyZoneTag": "",
                         "DisableUpgradeMigration": False, "UpgradeVersionTag": ""}
_DURATIONS = ("LastContactThreshold", "ServerStabilizationTime")
_UINTS = {"MaxTrailingLogs": UINT64_MAX, "MinQuorum": 2**32 - 1}
_BOOLS = ("CleanupDeadServers", "DisableUpgradeMigration")
_STRINGS = ("RedundancyZoneTag", "UpgradeVersionTag")
_CANON = {name.lower(): name for name in DEFAULTS}
# The agent configuration file's spelling (``autopilot { cleanup_dead_servers = ... }``).
_SNAKE = {"cleanup_dead_servers": "CleanupDeadServers", "last_contact_threshold": "LastContactThreshold",
          "max_trailing_logs": "MaxTrailingLogs", "min_quorum": "MinQuorum",
          "server_stabilization_time": "ServerStabilizationTime", "redundancy_zone_tag": "RedundancyZoneTag",
          "disable_upgrade_migration": "DisableUpgradeMigration", "upgrade_version_tag": "UpgradeVersionTag"}


class AutopilotConfigError(ValueError):
    """A configuration that does not decode (the HTTP API answers 400 with this message)."""


def _field(name: str, value: Any) -> Any:
    if name in _DURATIONS:
        try:
            seconds = parse_duration(value)
        except DurationError as exc:
            raise AutopilotConfigError(f"{name}: {exc}") from None
        if seconds < 0:
            raise AutopilotConfigError(f"{name}: must not be negative")
        return format_duration(seconds)
    if name in _UINTS:
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value or \
                not 0 <= value <= _UINTS[name]:
            raise AutopilotConfigError(f"{name}: must be an unsigned integer")
        return int(value)
    if name in _BOOLS:
        if not isinstance(value, bool):
            raise AutopilotConfigError(f"{name}: must be a boolean")
        return value
    if not isinstance(value, str):
        raise AutopilotConfigError(f"{name}: must be a string")
    return value


def decode(body: Any, base: dict[str, Any] | None = None, strict: bool = False) -> dict[str, Any]:
    """A configuration from a JSON object (keys case-insensitive, snake_case accepted, durations as
    strings or nanoseconds). Fields it leaves out come from ``base``: the zero values for Consul's
    PUT (the body is the whole configuration), the defaults for an agent's ``autopilot`` block.
    Other keys are ignored, as Go's JSON decoder ignores them (a GET's answer sent back carries
    indexes), unless ``strict`` (a configuration file: a misspelt key is an error there)."""
    if not isinstance(body, dict):
        raise AutopilotConfigError("the autopilot configuration must be a JSON object")
    out = dict(_ZERO if base is None else base)
    for key, value in body.items():
        name = _SNAKE.get(key) or _CANON.get(str(key).replace("_", "").lower())
        if name is None:
            if strict:
                raise AutopilotConfigError(f"unknown key {key!r}")
            continue
        if value is None:
            continue
        out[name] = _field(name, value)
    return out


def from_agent_config(block: dict[str, Any]) -> dict[str, Any]:
    """The configuration an agent's ``autopilot`` block describes (Consul's defaults for the rest)."""
    return decode(block, base=DEFAULTS, strict=True)


def stored(store: StateStore) -> dict[str, Any] | None:
    return store.extra.get(TABLE, {}).get(ROW)


def effective(store: StateStore, fallback: dict[str, Any]) -> dict[str, Any]:
    """The configuration in force: the replicated record, else ``fallback`` with indexes 0."""
    with store.lock:
        row = stored(store)
        return dict(row) if row is not None else {**fallback, "CreateIndex": 0, "ModifyIndex": 0}


def seconds(config: dict[str, Any], name: str) -> float:
    return parse_duration(config[name])


# ---------------------------------------------------------------------- commands
class AutopilotCommands:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    def handlers(self) -> dict[type[Any], Any]:
        return {cmd.AutopilotSet: lambda idx, c: self.set(idx, c.config, c.cas)}

    def set(self, idx: int, config: dict[str, Any], cas: int | None) -> bool:
        # Decoded again on every replica: a log entry from anywhere gets the same checks.
        new = decode(config, base=_ZERO)
        table = self.store.extra.setdefault(TABLE, {})
        old = table.get(ROW)
        if cas is not None and (old["ModifyIndex"] if old else 0) != cas:
            return False
        new["CreateIndex"] = old["CreateIndex"] if old else idx
        new["ModifyIndex"] = idx
        table[ROW] = new
        self.store.bump_table(TABLE, idx)
        self.store.touch(WATCH_KEY)
        return True


def install(store: StateStore) -> None:
    store.register_handlers(AutopilotCommands(store).handlers())
