"""Health checks run by the agent: definitions, runners and the scheduler.

Wiring (what the agent does)::

    sched = CheckScheduler(local_state, docker_host=cfg.docker_host, alias_source=local_state)
    # register (PUT /v1/agent/check/register, or each of a service's Check/Checks):
    defn = CheckDefinition.from_json(body, service_id=svc_id, check_id=service_check_id(svc_id, i, n))
    defn.validate()                      # CheckDefinitionError -> 400 "Invalid check: <message>"
    if defn.is_script and not script_checks_allowed(source):   # enable_(local_)script_checks
        ...refuse...
    defn = defn.normalized()             # interval raised to 1 s, as Consul does
    local_state.add_check(defn.to_health_check(node_name, service_name=..., service_tags=...))
    sched.add(defn)                      # replaces a check with the same ID
    # deregister: sched.remove(check_id); TTL endpoints: sched.ttl_update(check_id, status, note)
    # shutdown: await sched.stop()

``local_state.update_check(check_id, status, output)`` is called in the event loop for every
result (after thresholds), so the agent decides what to sync: status changes at once, output-only
changes deferred by ``check_update_interval``. The scheduler never reports a check's initial status.
``DeregisterCriticalServiceAfter`` is only carried in the definition: the agent's reaper acts on it.

See :mod:`beacon.checks.scheduler` for the timing rules, :mod:`beacon.checks.alias` for the
:class:`AliasSource` contract and :mod:`beacon.checks.errors` for the exception tree.
"""

from beacon.checks.alias import AliasSource, alias_result
from beacon.checks.clock import Clock, LoopClock
from beacon.checks.definition import (
    DEFAULT_OUTPUT_MAX_SIZE,
    DEFAULT_SCRIPT_TIMEOUT,
    DEFAULT_TIMEOUT,
    MIN_INTERVAL,
    CheckDefinition,
    service_check_id,
)
from beacon.checks.durations import DurationError, format_duration, parse_duration
from beacon.checks.errors import (
    CheckDefinitionError,
    CheckError,
    InvalidStatusError,
    NotTTLCheckError,
    UnknownCheckError,
)
from beacon.checks.scheduler import CheckScheduler, SchedulerStats
from beacon.checks.status import CRITICAL, PASSING, WARNING, CheckNotifier, StatusHandler

__all__ = [
    "CRITICAL",
    "DEFAULT_OUTPUT_MAX_SIZE",
    "DEFAULT_SCRIPT_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "MIN_INTERVAL",
    "PASSING",
    "WARNING",
    "AliasSource",
    "CheckDefinition",
    "CheckDefinitionError",
    "CheckError",
    "CheckNotifier",
    "CheckScheduler",
    "Clock",
    "DurationError",
    "InvalidStatusError",
    "LoopClock",
    "NotTTLCheckError",
    "SchedulerStats",
    "StatusHandler",
    "UnknownCheckError",
    "alias_result",
    "format_duration",
    "parse_duration",
    "service_check_id",
]
