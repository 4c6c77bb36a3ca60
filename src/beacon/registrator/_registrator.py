"""The registrator: Docker events edit a *desired* state; one syncer pushes the difference to the
registry; a periodic full sync with jitter repairs whatever was missed (Consul's anti-entropy shape).

* Events are hints, not facts: an event for container X re-inspects X and derives X's desired
  services from what the container *is* now. A per-container sequence number makes sure an older
  inspect (or a resync's listing) never overwrites a newer one.
* The syncer compares desired with ``pushed`` (what the registry holds, as far as we know) and only
  writes the difference, so a burst of events costs one pass and an idle resync writes nothing.
* A full sync re-lists containers and reads the agent's services and checks back into ``pushed``,
  so services lost by an agent restart are registered again, and (``cleanup``) this host's stale
  registrations (ID ``<hostname>:<container>:<port>`` or our owner Meta key) are removed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from dataclasses import dataclass, replace
from typing import Any, Literal

from beacon.registrator._clients import ConsulClient, DockerClient, DockerError, RegistryError
from beacon.registrator._mapping import (
    OWN_ID,
    MappingOptions,
    ServiceSpec,
    container_ip,
    container_services,
    health_check_id,
    health_consul_status,
    health_status_of,
)

__all__ = ["DeregisterMode", "Registrator", "RegistratorConfig", "RegistratorError"]

log = logging.getLogger("beacon.registrator")

DeregisterMode = Literal["always", "on-success", "never", "maintenance"]
DEREGISTER_MODES = ("always", "on-success", "never", "maintenance")
OWNER_META = "beacon-registrator"
MAINT_PREFIX = "_service_maintenance:"


class RegistratorError(Exception):
    """Fatal for the registrator: bad options, or Docker / the registry unreachable after the retries."""


@dataclass(frozen=True)
class RegistratorConfig:
    docker_host: str
    registry: str = ""                 # consul://host:port (CONSUL_HTTP_ADDR, else 127.0.0.1:8500)
    hostname: str = ""                 # first part of service IDs (default: this host's name)
    ip: str = ""                       # -ip: address for every service
    internal: bool = False
    explicit: bool = False
    tags: tuple[str, ...] = ()
    ip_from_label: str = ""
    resync: float = 30.0               # seconds between full syncs (0: only at start)
    cleanup: bool = True
    deregister: DeregisterMode = "always"
    retry_attempts: int = 0            # extra attempts at start; -1 forever
    retry_interval: float = 2.0        # seconds
    health_ttl: float = 90.0

    def validate(self) -> None:
        if self.deregister not in DEREGISTER_MODES:
            raise RegistratorError(f"-deregister must be one of {', '.join(DEREGISTER_MODES)}, "
                                   f"got {self.deregister!r}")
        if self.retry_interval <= 0:
            raise RegistratorError(f"-retry-interval must be > 0, got {self.retry_interval}")
        if self.resync < 0:
            raise RegistratorError(f"-resync must be >= 0, got {self.resync}")
        if self.retry_attempts < -1:
            raise RegistratorError(f"-retry-attempts must be -1 (forever) or more, got {self.retry_attempts}")


@dataclass
class Entry:
    """Desired state of one container."""

    name: str
    services: tuple[ServiceSpec, ...]
    state: Literal["up", "kept", "maintenance"] = "up"
    health: str | None = None


@dataclass(frozen=True)
class Want:
    spec: ServiceSpec | None          # None: adopted from the registry, never re-registered
    fingerprint: tuple[Any, ...]
    maintenance: bool = False
    health: str | None = None         # Consul status of the Docker health check, when there is one


@dataclass
class Pushed:
    fingerprint: tuple[Any, ...]
    maintenance: bool = False
    health: str | None = None


def fingerprint(spec: ServiceSpec) -> tuple[Any, ...]:
    return (spec.name, spec.port, spec.address, tuple(sorted(spec.tags)), tuple(sorted(spec.meta)),
            tuple(sorted(c.check_id for c in spec.checks)))


def observed_fingerprint(svc: dict[str, Any], check_ids: list[str]) -> tuple[Any, ...]:
    meta = {k: v for k, v in (svc.get("Meta") or {}).items() if k != OWNER_META}
    return (svc.get("Service", ""), int(svc.get("Port") or 0), svc.get("Address", ""),
            tuple(sorted(svc.get("Tags") or [])), tuple(sorted(meta.items())), tuple(sorted(check_ids)))


@dataclass
class _Stats:
    registered: int = 0
    deregistered: int = 0
    errors: int = 0
    full_syncs: int = 0


class Registrator:
    def __init__(self, config: RegistratorConfig) -> None:
        config.validate()
        self.config = config
        self.hostname = config.hostname or socket.gethostname()
        self.docker = DockerClient(config.docker_host)
        self.registry = ConsulClient(config.registry)
        self.host_ip = config.ip
        self.desired: dict[str, Entry] = {}
        self.adopted: dict[str, Want] = {}
        self.pushed: dict[str, Pushed] = {}
        self.stats = _Stats()
        self._seq = 0
        self._touched: dict[str, int] = {}
        self._rejected: dict[str, tuple[Any, ...]] = {}
        self._dirty = asyncio.Event()
        self._full_wanted = False
        self._health_refresh = False
        self._retry_at: float | None = None
        self._registry_down = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._inspect_limit = asyncio.Semaphore(16)
        self._push_limit = asyncio.Semaphore(16)
        self._events_ready = asyncio.Event()
        self.synced = asyncio.Event()     # set after the first full sync

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Reach the registry and Docker (retrying as configured), attach to events, then sync."""
        await self._with_retries("registry", self._ping_registry)
        await self._with_retries("docker", self.docker.ping)
        self._spawn(self._event_loop(), "registrator-events")
        try:
            async with asyncio.timeout(5):
                await self._events_ready.wait()
        except TimeoutError:
            log.warning("docker event stream not attached after 5s; relying on the full sync")
        await self.full_sync()
        self.synced.set()
        self._spawn(self._sync_loop(), "registrator-sync")

    async def stop(self) -> None:
        """Stop watching. Registrations stay: the next start (or its cleanup) reconciles them."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        await self.docker.close()
        await self.registry.close()

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _with_retries(self, what: str, call: Any) -> None:
        attempt = 0
        while True:
            try:
                await call()
                return
            except (RegistryError, DockerError) as exc:
                attempt += 1
                if self.config.retry_attempts != -1 and attempt > self.config.retry_attempts:
                    raise RegistratorError(f"{what} unreachable: {exc}") from exc
                log.warning("%s unreachable (attempt %d): %s; retrying in %.1fs", what, attempt, exc,
                            self.config.retry_interval)
                await asyncio.sleep(self.config.retry_interval)

    async def _ping_registry(self) -> None:
        leader = await self.registry.leader()
        log.info("registry %s: current leader %s", self.registry.base, leader or "(none)")
        if not self.host_ip:
            try:
                me = await self.registry.agent_self()
                self.host_ip = str((me.get("Member") or {}).get("Addr") or "")
            except RegistryError as exc:
                log.warning("cannot read the agent's address (%s); using this host's", exc)
            if not self.host_ip:
                try:
                    self.host_ip = socket.gethostbyname(socket.gethostname())
                except OSError:
                    self.host_ip = "127.0.0.1"
            log.info("registering published ports on %s (use -ip to choose another address)", self.host_ip)

    def options(self) -> MappingOptions:
        c = self.config
        return MappingOptions(hostname=self.hostname, host_ip=self.host_ip, forced_ip=c.ip, internal=c.internal,
                              explicit=c.explicit, tags=c.tags, ip_from_label=c.ip_from_label,
                              health_ttl=c.health_ttl)

    # ------------------------------------------------------------------ desired state
    def _touch(self, cid: str) -> int:
        self._seq += 1
        self._touched[cid] = self._seq
        return self._seq

    async def _derive(self, cid: str, inspect: dict[str, Any] | None) -> Entry | None:
        """What container ``cid`` should look like in the registry, given its inspect object."""
        previous = self.desired.get(cid)
        if inspect is None:
            return None
        state = inspect.get("State") or {}
        name = str(inspect.get("Name") or "").lstrip("/")
        if state.get("Running") and not state.get("Restarting"):
            peer_ip = ""
            mode = str((inspect.get("HostConfig") or {}).get("NetworkMode") or "")
            if mode.startswith("container:"):
                try:
                    peer = await self.docker.inspect(mode.split(":", 1)[1])
                except DockerError:
                    peer = None
                if peer:
                    peer_ip = container_ip(peer)
            services, problems = container_services(inspect, self.options(), peer_ip)
            for problem in problems:
                log.warning("%s", problem)
            if not services:
                log.debug("container %s: no published ports to register", name)
                return None
            return Entry(name, tuple(services), "up", health_status_of(inspect))
        if previous is None or not previous.services:
            return None
        mode_ = self.config.deregister
        code = int(state.get("ExitCode") or 0)
        if mode_ == "always" or (mode_ == "on-success" and (code == 0 or code & 128)):
            return None
        if mode_ == "maintenance":
            return replace(previous, state="maintenance", health="exited")
        return replace(previous, state="kept", health="exited")

    async def _inspect(self, cid: str) -> dict[str, Any] | None:
        async with self._inspect_limit:
            return await self.docker.inspect(cid)

    async def on_event(self, event: dict[str, Any]) -> None:
        cid = str(event.get("id") or (event.get("Actor") or {}).get("ID") or "")
        action = str(event.get("Action") or event.get("status") or "")
        if not cid:
            return
        seq = self._touch(cid)
        if action == "destroy":
            self._set(cid, None)
            return
        try:
            inspect = await self._inspect(cid)
        except DockerError as exc:
            log.warning("inspect %s after %s failed: %s (the next sync retries)", cid[:12], action, exc)
            return
        entry = await self._derive(cid, inspect)
        if self._touched.get(cid) == seq:  # a later event has not overtaken this one
            self._set(cid, entry)

    def _set(self, cid: str, entry: Entry | None) -> None:
        if entry is None:
            if self.desired.pop(cid, None) is not None:
                self._dirty.set()
        elif self.desired.get(cid) != entry:
            self.desired[cid] = entry
            self._dirty.set()

    def wants(self) -> dict[str, Want]:
        out: dict[str, Want] = dict(self.adopted)
        for entry in self.desired.values():
            for spec in entry.services:
                health = health_consul_status(entry.health) if spec.health_check else None
                out[spec.id] = Want(spec, fingerprint(spec), entry.state == "maintenance", health)
        return out

    # ------------------------------------------------------------------ events
    async def _event_loop(self) -> None:
        since: int | None = None
        delay = self.config.retry_interval
        while True:
            started = int(time.time())
            try:
                async for event in self.docker.events(since, on_connect=self._events_ready.set):
                    since = int(event.get("time") or 0) or since
                    self._spawn(self.on_event(event), "registrator-event")
                    delay = self.config.retry_interval
            except DockerError as exc:
                log.warning("%s; reconnecting in %.1fs", exc, delay)
            self._events_ready.set()
            since = since or started
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
            self._full_wanted = True  # events may have been missed while detached
            self._dirty.set()

    # ------------------------------------------------------------------ the syncer
    async def _sync_loop(self) -> None:
        loop = asyncio.get_running_loop()
        resync = self.config.resync
        next_full = loop.time() + self._jitter(resync) if resync else None
        health_every = self.config.health_ttl / 3
        next_health = loop.time() + health_every
        while True:
            now = loop.time()
            deadlines = [next_health] + ([next_full] if next_full else []) + \
                        ([self._retry_at] if self._retry_at else [])
            timeout = max(0.0, min(deadlines) - now)
            try:
                async with asyncio.timeout(timeout):
                    await self._dirty.wait()
            except TimeoutError:
                pass
            self._dirty.clear()
            now = loop.time()
            if self._retry_at is not None and now >= self._retry_at:
                self._retry_at = None
            try:
                if self._full_wanted or (next_full is not None and now >= next_full):
                    self._full_wanted = False
                    await self.full_sync()
                    next_full = loop.time() + self._jitter(resync) if resync else None
                    next_health = loop.time() + health_every
                    continue
                if now >= next_health:
                    self._force_health_refresh()
                    next_health = now + health_every
                await self.sync_changes()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad pass must not end the registrator
                log.exception("registrator sync failed; retrying")
                self._retry_at = loop.time() + self.config.retry_interval

    @staticmethod
    def _jitter(interval: float) -> float:
        return interval + random.uniform(0, interval / 8)

    def _force_health_refresh(self) -> None:
        for have in self.pushed.values():
            if have.health is not None:
                have.health = "refresh"

    async def sync_changes(self) -> None:
        """Push the difference between desired and pushed; failures are retried later."""
        wants = self.wants()
        jobs = [self._push(sid, want) for sid, want in wants.items() if self._differs(sid, want)]
        jobs += [self._remove(sid) for sid in list(self.pushed) if sid not in wants]
        if not jobs:
            return
        results = await asyncio.gather(*jobs, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            self._registry_down = True
            self._retry_at = asyncio.get_running_loop().time() + self.config.retry_interval
        elif self._registry_down:
            # The registry came back: it may have restarted and lost (or revived) registrations.
            self._registry_down = False
            self._full_wanted = True
            self._dirty.set()

    def _differs(self, sid: str, want: Want) -> bool:
        have = self.pushed.get(sid)
        if have is None:
            return want.spec is not None and self._rejected.get(sid) != want.fingerprint
        if have.fingerprint != want.fingerprint and want.spec is not None:
            return self._rejected.get(sid) != want.fingerprint
        return have.maintenance != want.maintenance or (want.health is not None and have.health != want.health)

    async def _push(self, sid: str, want: Want) -> None:
        async with self._push_limit:
            have = self.pushed.get(sid)
            try:
                if want.spec is not None and (have is None or have.fingerprint != want.fingerprint):
                    await self.registry.register(want.spec.registration(want.health, owner=self.hostname))
                    self.stats.registered += 1
                    log.info("registered %s (%s on %s:%d)", sid, want.spec.name, want.spec.address or "-",
                             want.spec.port)
                    have = self.pushed[sid] = Pushed(want.fingerprint, False, want.health)
                    self._rejected.pop(sid, None)
                if have is None:
                    return
                if have.maintenance != want.maintenance:
                    await self.registry.maintenance(sid, want.maintenance,
                                                    "container stopped" if want.maintenance else "")
                    have.maintenance = want.maintenance
                    log.info("service %s maintenance %s", sid, "on" if want.maintenance else "off")
                if want.health is not None and have.health != want.health:
                    await self.registry.update_check(health_check_id(sid), want.health, self._health_note(sid))
                    have.health = want.health
            except RegistryError as exc:
                self.stats.errors += 1
                if 400 <= exc.status < 500 and want.spec is not None:
                    log.error("register %s rejected by the registry: %s", sid, exc)
                    self._rejected[sid] = want.fingerprint
                    return
                log.warning("register %s failed (will retry): %s", sid, exc)
                raise

    async def _remove(self, sid: str) -> None:
        async with self._push_limit:
            try:
                await self.registry.deregister(sid)
            except RegistryError as exc:
                self.stats.errors += 1
                log.warning("deregister %s failed (will retry): %s", sid, exc)
                raise
            self.pushed.pop(sid, None)
            self._rejected.pop(sid, None)
            self.stats.deregistered += 1
            log.info("deregistered %s", sid)

    def _health_note(self, sid: str) -> str:
        for entry in self.desired.values():
            if any(s.id == sid for s in entry.services):
                return f"Docker health: {entry.health or 'unknown'}"
        return "Docker health: container not running"

    # ------------------------------------------------------------------ full sync
    async def full_sync(self) -> None:
        """Re-read Docker and the registry, then push the difference (anti-entropy)."""
        start_seq = self._seq
        self.stats.full_syncs += 1
        try:
            listing = await self.docker.containers(all_=True)
        except DockerError as exc:
            log.warning("full sync: cannot list containers: %s", exc)
            self._full_wanted = True
            self._retry_at = asyncio.get_running_loop().time() + self.config.retry_interval
            return
        by_id = {str(c.get("Id")): c for c in listing}
        names = {str(n).lstrip("/"): str(c.get("Id")) for c in listing for n in (c.get("Names") or [])}
        cids = set(by_id) | set(self.desired)

        async def refresh(cid: str) -> None:
            summary = by_id.get(cid)
            if summary is None:
                entry = None
            elif summary.get("State") != "running" and cid not in self.desired:
                return
            else:
                try:
                    entry = await self._derive(cid, await self._inspect(cid))
                except DockerError as exc:
                    log.warning("full sync: inspect %s failed: %s", cid[:12], exc)
                    return
            if self._touched.get(cid, 0) <= start_seq:
                self._set(cid, entry)

        await asyncio.gather(*(refresh(cid) for cid in cids))
        try:
            services = await self.registry.services()
            checks = await self.registry.checks()
        except RegistryError as exc:
            log.warning("full sync: cannot read the registry: %s", exc)
            self._registry_down = True
            self._full_wanted = True
            self._retry_at = asyncio.get_running_loop().time() + self.config.retry_interval
            return
        await self._observe(services, checks, names, start_seq)
        self._force_health_refresh()
        await self.sync_changes()

    async def _observe(self, services: dict[str, dict[str, Any]], checks: dict[str, dict[str, Any]],
                       names: dict[str, str], start_seq: int) -> None:
        """Replace ``pushed`` with what the registry really holds for the services we own."""
        by_service: dict[str, list[dict[str, Any]]] = {}
        for chk in checks.values():
            by_service.setdefault(str(chk.get("ServiceID") or ""), []).append(chk)
        wants = self.wants()
        observed: dict[str, Pushed] = {}
        adopted: dict[str, Want] = {}
        for sid, svc in services.items():
            mine = sid in wants or sid in self.pushed
            stale_own = self._is_own(sid, svc)
            if not mine and not stale_own:
                continue
            svc_checks = by_service.get(sid, [])
            ids = [str(c.get("CheckID")) for c in svc_checks if not str(c.get("CheckID")).startswith(MAINT_PREFIX)]
            maint = any(str(c.get("CheckID")).startswith(MAINT_PREFIX) for c in svc_checks)
            health = next((str(c.get("Status")) for c in svc_checks if c.get("CheckID") == health_check_id(sid)),
                          None)
            fp = observed_fingerprint(svc, ids)
            if sid in wants or sid in self.pushed:
                observed[sid] = Pushed(fp, maint, health)
            elif self.config.cleanup:
                keep = await self._keep_stopped(sid, names)
                observed[sid] = Pushed(fp, maint, health)
                if keep is not None:
                    adopted[sid] = Want(None, fp, keep == "maintenance", "critical" if health else None)
        self.pushed = observed
        tracked = {s.id for e in self.desired.values() for s in e.services}
        self.adopted = {sid: w for sid, w in adopted.items() if sid not in tracked}

    def _is_own(self, sid: str, svc: dict[str, Any]) -> bool:
        if (svc.get("Meta") or {}).get(OWNER_META) == self.hostname:
            return True
        m = OWN_ID.match(sid)
        return bool(m and m.group(1) == self.hostname)

    async def _keep_stopped(self, sid: str, names: dict[str, str]) -> str | None:
        """For a registration of ours whose container we do not track: keep it (and how) or not."""
        mode = self.config.deregister
        if mode == "always":
            return None
        m = OWN_ID.match(sid)
        cid = names.get(m.group(2)) if m else None
        if cid is None:
            return None  # the container is gone: nothing to keep
        try:
            inspect = await self._inspect(cid)
        except DockerError:
            return "kept"  # not sure: leave it for the next sync
        if inspect is None or (inspect.get("State") or {}).get("Running"):
            return None
        code = int((inspect.get("State") or {}).get("ExitCode") or 0)
        if mode == "on-success" and (code == 0 or code & 128):
            return None
        return "maintenance" if mode == "maintenance" else "kept"
