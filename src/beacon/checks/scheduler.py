"""The check scheduler: runs every check of one agent on one event loop.

Timing rules (Consul's, plus no drift):

* the first run of an interval check happens at a random offset in ``[0, interval)`` after it is
  added, so checks registered together do not fire together;
* later runs are due at ``first + k * interval``: the next due time is computed from the previous
  *due* time, not from when the last run finished, so slow runs do not make a check drift;
* a run that overruns its slot delays the next one to the next due time still ahead (missed slots
  are skipped and counted, never run in a burst); runs of one check never overlap;
* each run is bounded by the check's timeout, enforced by its probe (a script's whole process group
  is killed and reaped);
* nothing blocks the loop: HTTP checks share one aiohttp session, TCP/UDP use loop transports,
  scripts are asyncio subprocesses, docker checks talk to the Engine API asynchronously.

Each interval check is one asyncio task sleeping on one loop timer, so the loop's timer heap is the
run queue; thousands of checks cost thousands of idle tasks and nothing per tick.

Reporting: results go through a :class:`~beacon.checks.status.StatusHandler` (thresholds) to the
notifier on every run that passes the thresholds; TTL results go straight to the notifier; alias
checks report when their verdict changes. The scheduler never reports a check's initial status:
the agent records :attr:`CheckDefinition.status` when it registers the check.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import aiohttp

from beacon.checks.alias import AliasRunner, AliasSource
from beacon.checks.clock import Clock, LoopClock, sleep_until
from beacon.checks.definition import DEFAULT_OUTPUT_MAX_SIZE, MIN_INTERVAL, CheckDefinition
from beacon.checks.docker import DockerExecClient, DockerProbe
from beacon.checks.errors import CheckError, NotTTLCheckError, UnknownCheckError
from beacon.checks.http import HTTPProbe, make_http_session
from beacon.checks.network import TCPProbe, UDPProbe
from beacon.checks.probe import Probe
from beacon.checks.script import ScriptProbe
from beacon.checks.status import CRITICAL, CheckNotifier, StatusHandler
from beacon.checks.ttl import TTLRunner

__all__ = ["CheckScheduler", "SchedulerStats"]

log = logging.getLogger("beacon.checks")

# Belt and braces: probes enforce their own timeouts (a UDP probe may add a reply wait); this only
# catches a probe that hangs anyway, so it is generous.
def _guard(timeout: float) -> float:
    return 2 * timeout + 1.0


@dataclass(slots=True)
class SchedulerStats:
    """Counters for monitoring and the benchmark. ``lateness`` keeps the most recent samples."""

    runs: int = 0
    skipped_slots: int = 0
    probe_errors: int = 0
    lateness: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=200_000))


class _IntervalRunner:
    def __init__(self, scheduler: CheckScheduler, defn: CheckDefinition, probe: Probe,
                 handler: StatusHandler, interval: float, timeout: float) -> None:
        self.scheduler = scheduler
        self.defn = defn
        self.probe = probe
        self.handler = handler
        self.interval = interval
        self.timeout = timeout
        self.task: asyncio.Task[None] | None = None

    def start(self, after: asyncio.Task[None] | None) -> asyncio.Task[None]:
        first_delay = self.scheduler.rng.uniform(0.0, self.interval)
        self.task = asyncio.get_running_loop().create_task(
            self._run(first_delay, after), name=f"beacon-check-{self.defn.kind}:{self.defn.check_id}")
        return self.task

    async def _run(self, first_delay: float, after: asyncio.Task[None] | None) -> None:
        if after is not None:
            await asyncio.wait([after])  # the replaced instance has finished its last run
        clock, stats = self.scheduler.clock, self.scheduler.stats
        due = clock.time() + first_delay
        try:
            while True:
                await sleep_until(clock, due)
                stats.lateness.append(clock.time() - due)
                stats.runs += 1
                try:
                    async with asyncio.timeout(_guard(self.timeout)):
                        status, output = await self.probe.run()
                except TimeoutError:
                    stats.probe_errors += 1
                    status, output = CRITICAL, "Timed out running check"
                except Exception as exc:  # a probe bug must not stop the check for good
                    stats.probe_errors += 1
                    log.exception("check %s: probe failed", self.defn.check_id)
                    status, output = CRITICAL, f"check failed: {type(exc).__name__}: {exc}"
                try:
                    self.handler.update(status, output)
                except Exception:
                    log.exception("check %s: notifier failed", self.defn.check_id)
                due += self.interval
                now = clock.time()
                if due <= now:
                    missed = int((now - due) // self.interval) + 1
                    stats.skipped_slots += missed
                    due += missed * self.interval
        finally:
            await self.probe.close()


_Runner = _IntervalRunner | TTLRunner | AliasRunner


class CheckScheduler:
    """Runs the checks of one agent. Create and use it inside the running event loop.

    ``min_interval`` is the floor applied to intervals (Consul's 1 s; tests may lower it).
    ``max_output_size`` is the agent's ``check_output_max_size``: no check keeps more output.
    ``clock``/``rng`` can be replaced for tests. ``docker_host`` defaults to ``$DOCKER_HOST`` or the
    standard socket, and is only contacted when a docker check runs. ``alias_source`` is needed to
    add alias checks.
    """

    def __init__(self, notifier: CheckNotifier, *, docker_host: str | None = None,
                 alias_source: AliasSource | None = None, clock: Clock | None = None,
                 rng: random.Random | None = None, min_interval: float = MIN_INTERVAL,
                 http_connector_limit: int = 512,
                 max_output_size: int = DEFAULT_OUTPUT_MAX_SIZE) -> None:
        self.notifier = notifier
        self.alias_source = alias_source
        self.clock: Clock = clock or LoopClock()
        self.rng = rng or random.Random()
        self.min_interval = min_interval
        self.max_output_size = max_output_size
        self.stats = SchedulerStats()
        self._docker_host = docker_host
        self._docker: DockerExecClient | None = None
        self._http_limit = http_connector_limit
        self._http: aiohttp.ClientSession | None = None
        self._runners: dict[str, _Runner] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False

    # -- registry -----------------------------------------------------------------------------

    def __contains__(self, check_id: object) -> bool:
        return check_id in self._runners

    def __len__(self) -> int:
        return len(self._runners)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._runners))

    def definition(self, check_id: str) -> CheckDefinition:
        runner = self._runners.get(check_id)
        if runner is None:
            raise UnknownCheckError(check_id)
        return runner.defn

    def add(self, defn: CheckDefinition, *, last_output: str = "") -> None:
        """Start running ``defn``; a check with the same ID is replaced (its last run completes
        or is cancelled before the new one starts). Raises :class:`CheckDefinitionError` if invalid.

        ``last_output`` seeds a TTL check restored from persisted state, so that an expiry right
        after a restart still quotes it; the TTL itself starts afresh, as in Consul.
        """
        if self._stopped:
            raise CheckError("check scheduler is stopped")
        defn.validate()
        if not defn.check_id:
            raise CheckError("check has no ID")
        if not 0 < defn.output_max_size <= self.max_output_size:
            defn = dataclasses.replace(defn, output_max_size=self.max_output_size)
        previous = self._cancel(defn.check_id)
        kind = defn.kind
        runner: _Runner
        if kind == "ttl":
            runner = TTLRunner(defn, self.notifier, self.clock)
            runner.last_output = last_output
            runner.start()
        elif kind == "alias":
            if self.alias_source is None:
                raise CheckError("alias checks need an alias source, and this scheduler has none")
            runner = AliasRunner(defn, self.alias_source, self.notifier)
            self._track(runner.start(previous))
        else:
            interval = max(defn.interval, self.min_interval)
            timeout = defn.effective_timeout
            handler = StatusHandler(
                self.notifier, defn.check_id, success_before_passing=defn.success_before_passing,
                failures_before_warning=defn.failures_before_warning,
                failures_before_critical=defn.failures_before_critical)
            runner = _IntervalRunner(self, defn, self._probe(defn, timeout), handler, interval, timeout)
            self._track(runner.start(previous))
        self._runners[defn.check_id] = runner

    def remove(self, check_id: str) -> bool:
        """Stop a check (a run in progress is cancelled and cleaned up). False if unknown."""
        if check_id not in self._runners:
            return False
        self._cancel(check_id)
        return True

    def ttl_update(self, check_id: str, status: str, output: str = "") -> str:
        """Set a TTL check's status and output and restart its TTL; return the stored output.

        Raises :class:`UnknownCheckError`, :class:`NotTTLCheckError` or :class:`InvalidStatusError`.
        """
        runner = self._runners.get(check_id)
        if runner is None:
            raise UnknownCheckError(check_id)
        if not isinstance(runner, TTLRunner):
            raise NotTTLCheckError(check_id)
        return runner.update(status, output)

    def ttl_expires_at(self, check_id: str) -> float | None:
        """When (clock time) the TTL check expires, or None if already expired / not a TTL check."""
        runner = self._runners.get(check_id)
        return runner.expires_at if isinstance(runner, TTLRunner) else None

    def ttl_remaining(self, check_id: str) -> float | None:
        """Seconds until the TTL check expires (what the agent persists), or None as above."""
        expires = self.ttl_expires_at(check_id)
        return None if expires is None else max(0.0, expires - self.clock.time())

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop every check, wait (up to ``timeout``) for runs to clean up, close HTTP/docker clients."""
        self._stopped = True
        for check_id in list(self._runners):
            self._cancel(check_id)
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            if pending:
                log.warning("%d checks did not stop within %.1fs", len(pending), timeout)
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    # -- internals ----------------------------------------------------------------------------

    def _cancel(self, check_id: str) -> asyncio.Task[None] | None:
        runner = self._runners.pop(check_id, None)
        if runner is None:
            return None
        if isinstance(runner, TTLRunner):
            runner.stop()
            return None
        task = runner.task
        if task is not None and not task.done():
            task.cancel()
        return task

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("check task %s died", task.get_name(), exc_info=task.exception())

    def _http_session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = make_http_session(self._http_limit)
        return self._http

    def _probe(self, defn: CheckDefinition, timeout: float) -> Probe:
        kind = defn.kind
        if kind == "http":
            return HTTPProbe(defn, timeout, self._http_session)
        if kind == "tcp":
            return TCPProbe(defn.tcp, timeout)
        if kind == "udp":
            return UDPProbe(defn.udp, timeout)
        if kind == "grpc":
            from beacon.checks.grpc import GRPCProbe

            return GRPCProbe(defn, timeout)
        if kind == "h2ping":
            from beacon.checks.h2ping import H2PingProbe

            return H2PingProbe(defn, timeout)
        if kind == "docker":
            if self._docker is None:
                self._docker = DockerExecClient(self._docker_host)
            return DockerProbe(self._docker, defn.docker_container_id, defn.command, timeout,
                               defn.output_max_size)
        if kind == "script":
            return ScriptProbe(defn.command, timeout, defn.output_max_size)
        raise CheckError(f"no runner for check kind {kind!r}")  # validate() makes this unreachable


