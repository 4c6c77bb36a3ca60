"""The agent's side of health checking: decoding and policy, the scheduler, TTL state that survives
restarts, the critical-service reaper, and the alias source.

The runners themselves live in :mod:`beacon.checks`; this module is the glue Consul keeps in
``agent/agent.go`` (addCheck, the reaper) and ``agent/local`` (TTL persistence).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from beacon import telemetry
from beacon.checks import (
    CheckDefinition,
    CheckDefinitionError,
    CheckScheduler,
    NotTTLCheckError,
    UnknownCheckError,
    service_check_id,
)
from beacon.errors import Failed, Invalid
from beacon.model import HealthCheck, Service
from beacon.server.durable import atomic_write

if TYPE_CHECKING:
    from beacon.agent.local import LocalState
    from beacon.config import AgentConfig
    from beacon.server.fsm import StateStore
    from beacon.server.watch import WatchHub

log = logging.getLogger("beacon.agent.checks")

SCRIPTS_DISABLED = ("Scripts are disabled on this agent from remote calls; to enable, configure "
                    "'enable_script_checks' to true")
SCRIPTS_DISABLED_LOCAL = ("Scripts are disabled on this agent; to enable, configure 'enable_script_checks' "
                          "or 'enable_local_script_checks' to true")


class AgentChecks:
    """Owns the check scheduler and everything the agent does around it."""

    def __init__(self, config: AgentConfig, local: LocalState, hub: WatchHub, store: StateStore,
                 docker_host: Callable[[], str | None],
                 deregister_service: Callable[[str], Awaitable[None]]) -> None:
        self.config = config
        self.local = local
        self.hub = hub
        self.store = store
        self.docker_host = docker_host  # asked at start: the embedded engine may start after us
        self.deregister_service = deregister_service  # the reaper's way out for a critical service
        self.defs: dict[str, CheckDefinition] = {}
        self.critical_since: dict[str, float] = {}
        self.scheduler: CheckScheduler | None = None
        self._alias_wakers: dict[int, tuple[str | None, str | None, Callable[[], None]]] = {}
        self._reaper: asyncio.Task[None] | None = None
        cfg = config
        self.reap_interval = cfg.check_reap_interval
        self.dcsa_min = cfg.deregister_critical_service_after_min

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        docker_host = self.docker_host()
        self.scheduler = CheckScheduler(self, docker_host=docker_host, alias_source=self,
                                        max_output_size=self.config.check_output_max_size)
        self.local.on_change.append(self._wake_aliases)
        self.hub.listeners.append(lambda index, keys: self._wake_aliases())

    def start_reaper(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap_loop(), name="critical-reaper")

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            try:
                await self._reaper
            except asyncio.CancelledError:
                pass
        if self.scheduler is not None:
            await self.scheduler.stop()

    # ------------------------------------------------------------------ definitions
    def build(self, obj: dict[str, Any], source: str, service: Service | None, position: int = 0,
              total: int = 1) -> tuple[HealthCheck, dict[str, Any]]:
        """Decode, validate and apply the script policy; return the check as local state holds it."""
        default_id = None
        if service is not None and position:
            default_id = service_check_id(service.id, position - 1, total) if total > 1 else f"service:{service.id}"
        try:
            defn = CheckDefinition.from_json(obj, service_id=service.id if service else None, check_id=default_id)
            defn.validate()
        except CheckDefinitionError as exc:
            msg = str(exc)
            raise Invalid(msg if msg.startswith("Status for checks") else f"Invalid check: {msg}") from None
        if defn.is_script:
            cfg = self.config
            if source == "api" and not cfg.enable_script_checks:
                raise Failed(SCRIPTS_DISABLED)
            if source != "api" and not (cfg.enable_script_checks or cfg.enable_local_script_checks):
                raise Failed(SCRIPTS_DISABLED_LOCAL)
        defn = defn.normalized()
        if not defn.name and service is not None:
            defn.name = f"Service '{service.service}' check"
        chk = defn.to_health_check(self.config.node_name,
                                   service_name=service.service if service else "",
                                   service_tags=list(service.tags) if service else [])
        chk.definition = defn.definition_json()
        return chk, dict(obj)

    def restore_definition(self, chk: HealthCheck, raw: dict[str, Any]) -> None:
        """Re-parse a persisted check (its ID was fixed when it was first registered)."""
        if raw.get("maintenance"):
            return
        try:
            defn = CheckDefinition.from_json(raw, service_id=chk.service_id or None, check_id=chk.check_id)
            defn = defn.normalized()
        except CheckDefinitionError as exc:
            log.warning("persisted check %s no longer decodes: %s", chk.check_id, exc)
            return
        defn.check_id = chk.check_id
        self.defs[chk.check_id] = defn

    # ------------------------------------------------------------------ runners
    def start_runner(self, chk: HealthCheck, raw: dict[str, Any]) -> None:
        if raw.get("maintenance") or self.scheduler is None:
            return
        if chk.check_id not in self.defs:
            self.restore_definition(chk, raw)
        defn = self.defs.get(chk.check_id)
        if defn is None:
            return
        if chk.status == "critical":
            self.critical_since.setdefault(chk.check_id, time.monotonic())
        self.scheduler.add(defn, last_output=chk.output)

    def stop_runner(self, check_id: str) -> None:
        self.defs.pop(check_id, None)
        self.critical_since.pop(check_id, None)
        if self.scheduler is not None:
            self.scheduler.remove(check_id)
        self._drop_ttl_state(check_id)

    def ttl_update(self, check_id: str, status: str, output: str) -> str:
        """Raises KeyError (unknown: 404) or TypeError (not a TTL check: 500)."""
        assert self.scheduler is not None
        try:
            stored = self.scheduler.ttl_update(check_id, status, output)
        except UnknownCheckError:
            raise KeyError(check_id) from None
        except NotTTLCheckError:
            raise TypeError(check_id) from None
        self._save_ttl_state(check_id, status, stored)
        return stored

    # CheckNotifier
    def update_check(self, check_id: str, status: str, output: str) -> None:
        defn = self.defs.get(check_id)
        telemetry.check_run(defn.kind if defn else "", status)
        if status == "critical":
            self.critical_since.setdefault(check_id, time.monotonic())
        else:
            self.critical_since.pop(check_id, None)
        self.local.update_check(check_id, status, output)

    # ------------------------------------------------------------------ TTL state across restarts
    def _ttl_path(self, check_id: str) -> str | None:
        data_dir = self.config.data_dir
        if not data_dir:
            return None
        return os.path.join(data_dir, "checks", "state", hashlib.sha256(check_id.encode()).hexdigest()[:32] + ".json")

    def _save_ttl_state(self, check_id: str, status: str, output: str) -> None:
        path = self._ttl_path(check_id)
        defn = self.defs.get(check_id)
        if path is None or defn is None or defn.ttl <= 0:
            return
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            atomic_write(path, json.dumps({"check_id": check_id, "status": status, "output": output,
                                           "expires": time.time() + defn.ttl}).encode())
        except OSError as exc:  # a full disk costs the state across a restart, not the update itself
            log.warning("check %s: cannot persist TTL state: %s", check_id, exc)

    def _drop_ttl_state(self, check_id: str) -> None:
        path = self._ttl_path(check_id)
        if path is not None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def load_ttl_state(self, chk: HealthCheck) -> None:
        """Restore a TTL check's last status and output if its TTL has not run out yet (Consul does)."""
        path = self._ttl_path(chk.check_id)
        if path is None or not os.path.exists(path):
            return
        try:
            with open(path, encoding="utf-8") as f:
                state = json.load(f)
        except (OSError, ValueError):
            return
        if state.get("expires", 0) > time.time():
            chk.status = state["status"]
            chk.output = state["output"]

    # ------------------------------------------------------------------ reaper
    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self.reap_interval)
            try:
                await self.reap_once()
            except Exception as exc:
                log.warning("critical-service reaper: %s", exc)

    async def reap_once(self) -> None:
        """Deregister services whose check has been critical longer than its
        DeregisterCriticalServiceAfter (at least the configured minimum, 1m by default)."""
        now = time.monotonic()
        live = self.local.live_checks()
        doomed: set[str] = set()
        for cid, since in list(self.critical_since.items()):
            defn = self.defs.get(cid)
            chk = live.get(cid)
            if defn is None or chk is None or not chk.service_id or defn.deregister_critical_service_after <= 0:
                continue
            timeout = max(defn.deregister_critical_service_after, self.dcsa_min)
            if chk.status == "critical" and now - since > timeout:
                doomed.add(chk.service_id)
        for sid in doomed:
            if sid in self.local.live_services():
                log.info("deregistering service %s: critical longer than DeregisterCriticalServiceAfter", sid)
                await self.deregister_service(sid)

    # ------------------------------------------------------------------ AliasSource
    def alias_checks(self, node: str | None, service_id: str | None) -> Sequence[HealthCheck] | None:
        me = self.config.node_name
        if node is None or node.lower() == me.lower():
            local = self.local
            if service_id is not None and service_id not in local.live_services():
                return None
            if service_id:
                return [c for c in local.live_checks().values() if c.service_id in (service_id, "")]
            return [c for c in local.live_checks().values() if not c.service_id]
        store = self.store
        if store.get_node(node) is None:
            return None
        _, checks = store.node_checks(node)
        if service_id:
            if (node.lower(), service_id) not in store.services:
                return None
            return [c for c in checks if c.service_id == service_id or not c.service_id]
        return [c for c in checks if not c.service_id]

    def alias_watch(self, node: str | None, service_id: str | None, wake: Callable[[], None]) -> Callable[[], None]:
        key = id(wake)
        self._alias_wakers[key] = (node, service_id, wake)
        return lambda: self._alias_wakers.pop(key, None)

    def _wake_aliases(self) -> None:
        for _, _, wake in list(self._alias_wakers.values()):
            wake()
