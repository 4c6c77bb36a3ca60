"""The local agent's services and checks (Consul's ``agent/agent.go`` AddService/AddCheck and the
``/v1/agent/service|check`` endpoints behind them).

Registrations land in the agent's local state first and reach the catalog by anti-entropy; a write
here syncs at once (best effort: a failed sync is retried). The collaborators are the local state
and the check runner, not the agent.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from beacon.agent.http.decode import Fields
from beacon.errors import NotFound
from beacon.model import HealthCheck, Service

if TYPE_CHECKING:
    from beacon.agent.checking import AgentChecks
    from beacon.agent.local import LocalState

log = logging.getLogger("beacon.agent")


class LocalAgent:
    def __init__(self, local: LocalState, checks: AgentChecks) -> None:
        self.local = local
        self.checks = checks

    async def sync_now(self) -> None:
        """Best-effort synchronous sync after an agent write (failures are retried by anti-entropy)."""
        try:
            await self.local.sync_changes()
        except Exception as exc:
            log.warning("sync after local change failed (anti-entropy will retry): %s", exc)

    async def register_service(self, svc: Service, check_objs: list[dict[str, Any]], source: str = "api",
                               replace_existing_checks: bool = False, sync: bool = True) -> None:
        built = []
        for i, obj in enumerate(check_objs):
            built.append(self.checks.build(obj, source, service=svc, position=i + 1, total=len(check_objs)))
        existing = [cid for cid, c in self.local.live_checks().items() if c.service_id == svc.id]
        self.local.add_service(svc, source=source)
        new_ids = set()
        for chk, definition in built:
            self.add_check(chk, definition, source)
            new_ids.add(chk.check_id)
        if replace_existing_checks:
            for cid in existing:
                if cid not in new_ids:
                    self.checks.stop_runner(cid)
                    self.local.remove_check(cid)
        if sync:
            await self.sync_now()

    async def deregister_service(self, service_id: str) -> None:
        """Raises KeyError for a service this agent does not have."""
        removed = self.local.remove_service(service_id)
        for cid in removed:
            self.checks.stop_runner(cid)
        await self.sync_now()

    async def register_check(self, obj: dict[str, Any], source: str = "api", sync: bool = True) -> None:
        service = None
        sid = Fields(obj).str("ServiceID")
        if sid:
            service = self.local.live_services().get(sid)
            if service is None:
                raise NotFound(f'ServiceID "{sid}" does not exist')
        chk, definition = self.checks.build(obj, source, service=service)
        self.add_check(chk, definition, source)
        if sync:
            await self.sync_now()

    def add_check(self, chk: HealthCheck, definition: dict[str, Any], source: str) -> None:
        """A built check into local state, with its runner (re-registration replaces the runner)."""
        self.checks.stop_runner(chk.check_id)
        self.local.add_check(chk, definition, source=source)
        self.checks.restore_definition(chk, definition)
        self.checks.start_runner(chk, definition)

    async def deregister_check(self, check_id: str) -> None:
        """Raises KeyError for a check this agent does not have."""
        self.local.remove_check(check_id)
        self.checks.stop_runner(check_id)
        await self.sync_now()

    async def ttl_update(self, check_id: str, status: str, output: str) -> None:
        """Raises KeyError for an unknown check, TypeError for one that is not a TTL check."""
        entry = self.local.checks.get(check_id)
        if entry is None or entry.deleted:
            raise KeyError(check_id)
        stored = self.checks.ttl_update(check_id, status, output)
        self.local.update_check(check_id, status, stored)
        await self.sync_now()

    async def set_service_maintenance(self, service_id: str, enable: bool, reason: str) -> None:
        """Raises KeyError for a service this agent does not have."""
        self.local.set_service_maintenance(service_id, enable, reason)
        await self.sync_now()

    async def set_node_maintenance(self, enable: bool, reason: str) -> None:
        self.local.set_node_maintenance(enable, reason)
        await self.sync_now()
