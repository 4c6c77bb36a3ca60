"""The agent's own services and checks, and anti-entropy with the catalog.

The agent is authoritative for its node. Local entries carry ``in_sync``/``deleted`` flags; every
change triggers a partial sync, and a full sync every minute (plus jitter) repairs whatever the
catalog lost or gained behind the agent's back (Consul's ``agent/local`` + ``agent/ae``).

API-registered services and checks are persisted under ``<data_dir>/services`` and ``<data_dir>/checks``
(one JSON file each, written atomically) and restored at start; config-file ones are re-applied from
the config on every start.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from beacon.model import (
    NODE_MAINT_CHECK_ID,
    SERF_CHECK_ID,
    SERVICE_MAINT_PREFIX,
    HealthCheck,
    Service,
)
from beacon.server import commands as cmd
from beacon.server.durable import atomic_write

log = logging.getLogger("beacon.agent.local")

Submit = Callable[[tuple[int, dict[str, Any]]], Awaitable[Any]]


@dataclass
class LocalService:
    service: Service
    source: str = "api"          # "api" | "config" | "registrator"
    in_sync: bool = False
    deleted: bool = False


@dataclass
class LocalCheck:
    check: HealthCheck
    definition: dict[str, Any] = field(default_factory=dict)  # as registered (for persistence/runners)
    source: str = "api"
    in_sync: bool = False
    deleted: bool = False
    output_deferred: asyncio.TimerHandle | None = None


class LocalState:
    def __init__(self, node: str, node_id: str, address: str, datacenter: str,
                 node_meta: dict[str, str], submit: Submit, data_dir: str | None = None,
                 check_update_interval: float = 300.0) -> None:
        self.node = node
        self.node_id = node_id
        self.address = address
        self.datacenter = datacenter
        self.node_meta = dict(node_meta)
        self._submit = submit
        self.data_dir = data_dir
        self.check_update_interval = check_update_interval
        self.services: dict[str, LocalService] = {}
        self.checks: dict[str, LocalCheck] = {}
        self.node_in_sync = False
        self._sync_event = asyncio.Event()
        self._sync_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.full_sync_interval = 60.0
        self.retry_interval = 2.0
        self.on_change: list[Callable[[], None]] = []
        self.fetch_remote: Callable[[], Awaitable[tuple[Any, list[Service], list[HealthCheck]]]] | None = None
        self._full_sync_requested = False

    def trigger_full_sync(self) -> None:
        """Run a full sync soon (a server joined, the cluster changed)."""
        self._full_sync_requested = True
        self._sync_event.set()

    # ------------------------------------------------------------------ services
    def add_service(self, svc: Service, source: str = "api", persist: bool = True) -> None:
        svc.node = self.node
        self.services[svc.id] = LocalService(svc, source)
        if persist and source == "api":
            self._persist("services", svc.id, {"service": svc.to_dict()})
        self._changed()

    def remove_service(self, service_id: str) -> list[str]:
        """Mark a service and its checks deleted. Returns the removed check IDs."""
        entry = self.services.get(service_id)
        if entry is None or entry.deleted:
            raise KeyError(service_id)
        entry.deleted = True
        entry.in_sync = False
        removed = [cid for cid, c in self.checks.items() if c.check.service_id == service_id and not c.deleted]
        for cid in removed:
            self._mark_check_deleted(cid)
        self._unpersist("services", service_id)
        self._changed()
        return removed

    def live_services(self) -> dict[str, Service]:
        return {sid: e.service for sid, e in self.services.items() if not e.deleted}

    # ------------------------------------------------------------------ checks
    def add_check(self, chk: HealthCheck, definition: dict[str, Any], source: str = "api",
                  persist: bool = True) -> None:
        chk.node = self.node
        if chk.service_id:
            svc = self.services.get(chk.service_id)
            if svc is None or svc.deleted:
                raise KeyError(chk.service_id)
            chk.service_name = svc.service.service
            chk.service_tags = list(svc.service.tags)
        old = self.checks.get(chk.check_id)
        if old is not None and old.output_deferred is not None:
            old.output_deferred.cancel()
        self.checks[chk.check_id] = LocalCheck(chk, definition, source)
        if persist and source == "api":
            self._persist("checks", chk.check_id, {"check": chk.to_dict(), "definition": definition})
        self._changed()

    def remove_check(self, check_id: str) -> None:
        entry = self.checks.get(check_id)
        if entry is None or entry.deleted:
            raise KeyError(check_id)
        self._mark_check_deleted(check_id)
        self._changed()

    def _mark_check_deleted(self, check_id: str) -> None:
        entry = self.checks[check_id]
        entry.deleted = True
        entry.in_sync = False
        if entry.output_deferred is not None:
            entry.output_deferred.cancel()
            entry.output_deferred = None
        self._unpersist("checks", check_id)

    def live_checks(self) -> dict[str, HealthCheck]:
        return {cid: e.check for cid, e in self.checks.items() if not e.deleted}

    def update_check(self, check_id: str, status: str, output: str) -> None:
        """A check result. Status changes sync at once; output-only changes are deferred."""
        entry = self.checks.get(check_id)
        if entry is None or entry.deleted:
            return
        chk = entry.check
        if chk.status == status and chk.output == output:
            return
        status_changed = chk.status != status
        chk.status = status
        chk.output = output
        if status_changed or self.check_update_interval <= 0:
            if entry.output_deferred is not None:
                entry.output_deferred.cancel()
                entry.output_deferred = None
            entry.in_sync = False
            self._changed()
            return
        if entry.in_sync and entry.output_deferred is None:
            delay = self.check_update_interval * (0.5 + random.random())

            def flush(cid: str = check_id) -> None:
                e = self.checks.get(cid)
                if e is not None and not e.deleted:
                    e.output_deferred = None
                    e.in_sync = False
                    self._changed()

            entry.output_deferred = asyncio.get_running_loop().call_later(delay, flush)

    # ------------------------------------------------------------------ maintenance
    def set_node_maintenance(self, enable: bool, reason: str) -> None:
        if enable:
            if NODE_MAINT_CHECK_ID in self.checks and not self.checks[NODE_MAINT_CHECK_ID].deleted:
                return
            notes = reason or ("Maintenance mode is enabled for this node, but no reason was provided. "
                               "This is a default message.")
            self.add_check(HealthCheck(node=self.node, check_id=NODE_MAINT_CHECK_ID,
                                       name="Node Maintenance Mode", status="critical", notes=notes,
                                       type="maintenance"), {"maintenance": True})
        elif NODE_MAINT_CHECK_ID in self.checks and not self.checks[NODE_MAINT_CHECK_ID].deleted:
            self.remove_check(NODE_MAINT_CHECK_ID)

    def set_service_maintenance(self, service_id: str, enable: bool, reason: str) -> None:
        if service_id not in self.live_services():
            raise KeyError(service_id)
        cid = SERVICE_MAINT_PREFIX + service_id
        if enable:
            if cid in self.checks and not self.checks[cid].deleted:
                return
            notes = reason or ("Maintenance mode is enabled for this service, but no reason was provided. "
                               "This is a default message.")
            self.add_check(HealthCheck(node=self.node, check_id=cid, name="Service Maintenance Mode",
                                       status="critical", notes=notes, service_id=service_id,
                                       type="maintenance"), {"maintenance": True})
        elif cid in self.checks and not self.checks[cid].deleted:
            self.remove_check(cid)

    # ------------------------------------------------------------------ persistence
    def _path(self, kind: str, ident: str) -> str | None:
        if not self.data_dir:
            return None
        name = hashlib.sha256(ident.encode()).hexdigest()[:32]
        return os.path.join(self.data_dir, kind, name + ".json")

    def _persist(self, kind: str, ident: str, doc: dict[str, Any]) -> None:
        path = self._path(kind, ident)
        if path is None:
            return
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        atomic_write(path, json.dumps(doc).encode())

    def _unpersist(self, kind: str, ident: str) -> None:
        path = self._path(kind, ident)
        if path is not None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def load_persisted(self) -> tuple[list[Service], list[tuple[HealthCheck, dict[str, Any]]]]:
        services: list[Service] = []
        checks: list[tuple[HealthCheck, dict[str, Any]]] = []
        if not self.data_dir:
            return services, checks
        for kind in ("services", "checks"):
            directory = os.path.join(self.data_dir, kind)
            if not os.path.isdir(directory):
                continue
            for name in sorted(os.listdir(directory)):
                if not name.endswith(".json"):
                    continue
                path = os.path.join(directory, name)
                try:
                    with open(path, encoding="utf-8") as f:
                        doc = json.load(f)
                except (OSError, ValueError) as exc:
                    log.warning("skipping unreadable persisted %s file %s: %s", kind[:-1], path, exc)
                    continue
                if kind == "services":
                    services.append(Service.from_dict(doc["service"]))
                else:
                    checks.append((HealthCheck.from_dict(doc["check"]), doc.get("definition") or {}))
        return services, checks

    # ------------------------------------------------------------------ anti-entropy
    def _changed(self) -> None:
        self._sync_event.set()
        for cb in self.on_change:
            cb()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="anti-entropy")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for entry in self.checks.values():
            if entry.output_deferred is not None:
                entry.output_deferred.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_full = loop.time()
        while True:
            timeout = max(0.0, next_full - loop.time())
            try:
                await asyncio.wait_for(self._sync_event.wait(), timeout)
            except TimeoutError:
                pass
            try:
                if loop.time() >= next_full or self._full_sync_requested:
                    self._full_sync_requested = False
                    await self.full_sync()
                    next_full = loop.time() + self.full_sync_interval * (1 + random.random())
                else:
                    await self.sync_changes()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Consul waits 15 s; a cluster that is still electing is usually back much sooner.
                log.warning("anti-entropy sync failed, retrying shortly: %s", exc)
                next_full = loop.time() + self.retry_interval * (1 + random.random())

    def _node_payload(self) -> dict[str, Any]:
        return {"node": self.node, "id": self.node_id, "address": self.address,
                "datacenter": self.datacenter, "node_meta": dict(self.node_meta)}

    async def _apply(self, command: cmd.Record) -> None:
        result = await self._submit(command)
        error = getattr(result, "error", None)
        if error is not None:
            raise RuntimeError(error.message)

    async def sync_changes(self) -> None:
        """Push every out-of-sync entry to the catalog (node first)."""
        async with self._sync_lock:
            self._sync_event.clear()
            if not self.node_in_sync:
                await self._apply(cmd.Register(**self._node_payload()))
                self.node_in_sync = True
            for sid, entry in list(self.services.items()):
                if entry.in_sync:
                    continue
                if entry.deleted:
                    await self._apply(cmd.Deregister(node=self.node, service_id=sid))
                    if self.services.get(sid) is entry:
                        del self.services[sid]
                    for cid in [c for c, e in self.checks.items() if e.deleted and e.check.service_id == sid]:
                        del self.checks[cid]
                    continue
                payload = {"node": self.node, "skip_node_update": True, "service": entry.service.to_dict()}
                await self._apply(cmd.Register(**payload))
                entry.in_sync = True
            for cid, entry in list(self.checks.items()):
                if entry.in_sync:
                    continue
                if entry.deleted:
                    await self._apply(cmd.Deregister(node=self.node, check_id=cid))
                    if self.checks.get(cid) is entry:
                        del self.checks[cid]
                    continue
                if entry.check.service_id and entry.check.service_id not in self.live_services():
                    continue
                payload = {"node": self.node, "skip_node_update": True, "checks": [entry.check.to_dict()]}
                await self._apply(cmd.Register(**payload))
                entry.in_sync = True

    async def full_sync(self) -> None:
        """Compare with the catalog; mark differences out of sync; delete what the agent doesn't know."""
        if self.fetch_remote is not None:
            node, remote_services, remote_checks = await self.fetch_remote()
            local_services = self.live_services()
            if node is None or (node.address, node.meta, node.id) != (self.address, self.node_meta, self.node_id):
                self.node_in_sync = False
            remote_by_id = {s.id: s for s in remote_services}
            for sid, entry in self.services.items():
                if entry.deleted:
                    continue
                remote = remote_by_id.get(sid)
                if remote is None:
                    entry.in_sync = False
                    continue
                mine = entry.service
                if entry.service.enable_tag_override:
                    mine = Service.from_dict({**mine.to_dict(), "tags": list(remote.tags)})
                    entry.service.tags = list(remote.tags)
                if remote != mine:
                    entry.in_sync = False
            for remote in remote_services:
                if remote.id not in local_services and not (remote.service == "consul" and remote.id == "consul"):
                    await self._apply(cmd.Deregister(node=self.node, service_id=remote.id))
            local_checks = self.live_checks()
            remote_check_ids = set()
            for rc in remote_checks:
                remote_check_ids.add(rc.check_id)
                if rc.check_id == SERF_CHECK_ID:
                    continue
                mine_c = local_checks.get(rc.check_id)
                if mine_c is None:
                    await self._apply(cmd.Deregister(node=self.node, check_id=rc.check_id))
                elif rc != mine_c:
                    self.checks[rc.check_id].in_sync = False
            for cid in local_checks:
                if cid not in remote_check_ids:
                    self.checks[cid].in_sync = False
        else:
            self.node_in_sync = False
            for e in self.services.values():
                e.in_sync = False
            for c in self.checks.values():
                c.in_sync = False
        await self.sync_changes()
