"""Health checks run by the agent: definitions, runners and the scheduler.

The agent decodes a check with :meth:`CheckDefinition.from_json`, validates it, and hands it to a
:class:`CheckScheduler`, which reports results to the agent's :class:`CheckNotifier`. See
:mod:`beacon.checks.scheduler` for the timing rules and :mod:`beacon.checks.errors` for the
exception tree.
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
