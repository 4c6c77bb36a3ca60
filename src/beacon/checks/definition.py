"""Check definitions: decoding Consul's check JSON, validation, and the ``Definition`` view.

A :class:`CheckDefinition` is what the agent hands to :class:`~beacon.checks.CheckScheduler`. It is
decoded from a Consul check body (``PUT /v1/agent/check/register``, or one entry of a service's
``Check``/``Checks``) by :meth:`CheckDefinition.from_json`:

* key matching ignores case and underscores, so ``DockerContainerID``, ``dockercontainerid`` and
  ``docker_container_id`` are one key; ``ScriptArgs``/``script_args`` are aliases of ``Args`` and
  ``CheckID`` of ``ID``;
* durations are Go strings or integer nanoseconds (:func:`beacon.checks.durations.parse_duration`);
  an empty string means "not set";
* unknown keys are ignored, as Consul ignores them; a check type this agent cannot run
  (``OSService``, a Windows service) is refused with a clear error rather than registered as something else.

Durations are float seconds and ``0.0`` means "not set", as a zero ``time.Duration`` does in Consul.

HTTP checks follow redirects unless ``DisableRedirects`` is true, as in Consul (then a 3xx is critical).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from beacon.checks.durations import DurationError, format_duration, parse_duration
from beacon.checks.errors import CheckDefinitionError
from beacon.model import HEALTH_STATUSES, HealthCheck
from beacon.numbers import INT64_MAX, INT64_MIN, ascii_int

__all__ = [
    "DEFAULT_OUTPUT_MAX_SIZE",
    "DEFAULT_SCRIPT_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "MIN_INTERVAL",
    "CheckDefinition",
    "CheckDefinitionError",
    "service_check_id",
]

MIN_INTERVAL = 1.0
DEFAULT_TIMEOUT = 10.0
DEFAULT_SCRIPT_TIMEOUT = 30.0
DEFAULT_OUTPUT_MAX_SIZE = 4096

KINDS = ("script", "http", "tcp", "udp", "ttl", "docker", "alias")


def service_check_id(service_id: str, index: int = 0, total: int = 1) -> str:
    """The ID Consul gives the ``index``-th (0-based) of ``total`` checks embedded in a service."""
    base = f"service:{service_id}"
    return base if total <= 1 else f"{base}:{index + 1}"


def _norm(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


# normalised JSON key -> (field name, decoder name)
_KEYS: dict[str, tuple[str, str]] = {
    "id": ("check_id", "str"),
    "checkid": ("check_id", "str"),
    "name": ("name", "str"),
    "serviceid": ("service_id", "str"),
    "notes": ("notes", "str"),
    "status": ("status", "str"),
    "interval": ("interval", "duration"),
    "timeout": ("timeout", "duration"),
    "ttl": ("ttl", "duration"),
    "deregistercriticalserviceafter": ("deregister_critical_service_after", "duration"),
    "args": ("args", "strlist"),
    "scriptargs": ("args", "strlist"),
    "script": ("script", "str"),
    "shell": ("shell", "str"),
    "dockercontainerid": ("docker_container_id", "str"),
    "http": ("http", "str"),
    "method": ("method", "str"),
    "header": ("header", "header"),
    "body": ("body", "str"),
    "tlsskipverify": ("tls_skip_verify", "bool"),
    "tlsservername": ("tls_server_name", "str"),
    "disableredirects": ("disable_redirects", "bool"),
    "tcp": ("tcp", "str"),
    "udp": ("udp", "str"),
    "grpc": ("grpc", "str"),
    "grpcusetls": ("grpc_use_tls", "bool"),
    "h2ping": ("h2ping", "str"),
    "h2pingusetls": ("h2ping_use_tls", "bool"),
    "aliasservice": ("alias_service", "str"),
    "aliasnode": ("alias_node", "str"),
    "successbeforepassing": ("success_before_passing", "int"),
    "failuresbeforewarning": ("failures_before_warning", "int"),
    "failuresbeforecritical": ("failures_before_critical", "int"),
    "outputmaxsize": ("output_max_size", "int"),
}
_UNSUPPORTED = {"osservice": "OSService"}


def _decode(kind: str, key: str, value: Any) -> Any:
    if kind == "str":
        if value is None:
            return ""
        if not isinstance(value, str):
            raise CheckDefinitionError(f"{key} must be a string")
        return value
    if kind == "duration":
        if value is None or value == "":
            return 0.0
        try:
            return parse_duration(value)
        except DurationError as exc:
            raise CheckDefinitionError(f"{key}: {exc}") from exc
    if kind == "int":
        if value is None:
            return 0
        if isinstance(value, bool):
            raise CheckDefinitionError(f"{key} must be an integer")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(value, str):
            value = ascii_int(value.strip(), signed=True)
        if not isinstance(value, int) or not INT64_MIN <= value <= INT64_MAX:  # a Go int
            raise CheckDefinitionError(f"{key} must be an integer")
        return value
    if kind == "bool":
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "t", "true", "0", "f", "false"):
            return value.lower() in ("1", "t", "true")
        raise CheckDefinitionError(f"{key} must be a boolean")
    if kind == "strlist":
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise CheckDefinitionError(f"{key} must be a list of strings")
        return list(value)
    if kind == "header":
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise CheckDefinitionError(f"{key} must be an object of header name to list of values")
        out: dict[str, list[str]] = {}
        for name, vals in value.items():
            if isinstance(vals, str):
                vals = [vals]
            if not isinstance(vals, list) or not all(isinstance(v, str) for v in vals):
                raise CheckDefinitionError(f"{key}: values of header {name!r} must be strings")
            out[str(name)] = list(vals)
        return out
    raise AssertionError(kind)


@dataclass(slots=True)
class CheckDefinition:
    """One health check as the agent registered it (snake_case; durations in float seconds)."""

    check_id: str = ""
    name: str = ""
    service_id: str = ""
    notes: str = ""
    status: str = "critical"
    interval: float = 0.0
    timeout: float = 0.0
    ttl: float = 0.0
    deregister_critical_service_after: float = 0.0
    args: list[str] = field(default_factory=list)
    script: str = ""  # legacy Consul "Script": one string run by the shell
    shell: str = ""
    docker_container_id: str = ""
    http: str = ""
    method: str = ""
    header: dict[str, list[str]] = field(default_factory=dict)
    body: str = ""
    tls_skip_verify: bool = False
    tls_server_name: str = ""
    disable_redirects: bool = False
    tcp: str = ""
    udp: str = ""
    grpc: str = ""               # host:port[/service]
    grpc_use_tls: bool = False
    h2ping: str = ""             # host:port
    h2ping_use_tls: bool = True  # Consul's default
    alias_service: str = ""
    alias_node: str = ""
    success_before_passing: int = 0
    failures_before_warning: int = 0
    failures_before_critical: int = 0
    output_max_size: int = DEFAULT_OUTPUT_MAX_SIZE

    # -- decoding -----------------------------------------------------------------------------

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, service_id: str | None = None,
                  check_id: str | None = None) -> CheckDefinition:
        """Decode a Consul check body.

        ``service_id`` is used when the body names none (a check embedded in a service
        registration). ``check_id`` is the ID to use when the body has no ``ID``/``CheckID``
        (e.g. :func:`service_check_id`); failing both, the ID is the check's ``Name``, as Consul
        does for ``/v1/agent/check/register``. Raises :class:`CheckDefinitionError`.
        """
        if not isinstance(obj, Mapping):
            raise CheckDefinitionError("check definition must be a JSON object")
        values: dict[str, Any] = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                continue
            nk = _norm(key)
            if nk in _UNSUPPORTED:
                if value not in (None, ""):
                    raise CheckDefinitionError(f"{_UNSUPPORTED[nk]} checks are not supported by this agent")
                continue
            spec = _KEYS.get(nk)
            if spec is None:
                continue  # unknown keys are ignored, as Consul does
            fname, kind = spec
            values[fname] = _decode(kind, key, value)
        if not values.get("status"):
            values.pop("status", None)
        if "output_max_size" in values and values["output_max_size"] == 0:
            values.pop("output_max_size")  # 0 means "use the default"
        if not values.get("service_id") and service_id:
            values["service_id"] = service_id
        if not values.get("check_id"):
            values["check_id"] = check_id or values.get("name", "")
        return cls(**values)

    # -- classification -----------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """``http``, ``ttl``, ``tcp``, ``udp``, ``grpc``, ``h2ping``, ``alias``, ``docker``, ``script``,
        or ``""`` if none."""
        if self.http:
            return "http"
        if self.ttl > 0:
            return "ttl"
        if self.tcp:
            return "tcp"
        if self.udp:
            return "udp"
        if self.grpc:
            return "grpc"
        if self.h2ping:
            return "h2ping"
        if self.alias_service or self.alias_node:
            return "alias"
        if self.docker_container_id:
            return "docker"
        if self.args or self.script:
            return "script"
        return ""

    @property
    def type(self) -> str:
        """The ``Type`` shown in ``/v1/agent/checks`` (same as :attr:`kind`)."""
        return self.kind

    @property
    def is_script(self) -> bool:
        """True for checks that run commands (script and docker): gated by enable_script_checks."""
        return self.kind in ("script", "docker")

    @property
    def command(self) -> list[str]:
        """The argv a script or docker check runs (``Args``, or ``Shell -c Script`` for legacy Script)."""
        if self.args:
            return list(self.args)
        if self.script:
            return [self.shell or "/bin/sh", "-c", self.script]
        return []

    @property
    def effective_timeout(self) -> float:
        """Timeout of one run: the configured one, else 30 s for script/docker and 10 s otherwise."""
        if self.timeout > 0:
            return self.timeout
        return DEFAULT_SCRIPT_TIMEOUT if self.is_script else DEFAULT_TIMEOUT

    @property
    def effective_failures_before_warning(self) -> int:
        """FailuresBeforeWarning defaults to FailuresBeforeCritical, as in Consul."""
        return self.failures_before_warning or self.failures_before_critical

    # -- validation ---------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise :class:`CheckDefinitionError` with Consul's message if the check is invalid.

        Does not change the definition; see :meth:`normalized` for the stored form.
        """
        if self.status not in HEALTH_STATUSES:
            raise CheckDefinitionError("Status for checks must 'passing', 'warning', 'critical'")
        kind = self.kind
        if self.interval > 0 and self.ttl > 0:
            raise CheckDefinitionError("Interval and TTL cannot both be specified")
        if self.alias_service or self.alias_node:
            if self.interval > 0:
                raise CheckDefinitionError("Interval cannot be set for Alias checks")
            if self.ttl > 0:
                raise CheckDefinitionError("TTL must be not be set for Alias checks")
        if kind in ("script", "docker", "http", "tcp", "udp", "h2ping") and self.interval <= 0:
            raise CheckDefinitionError(
                "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks")
        if kind == "grpc" and self.interval <= 0:
            raise CheckDefinitionError("Interval must be > 0 for a GRPC check")
        if self.ttl < 0 and kind == "":
            raise CheckDefinitionError("TTL must be > 0 for TTL checks")
        if kind == "":
            raise CheckDefinitionError(
                "Check type is not valid: set one of Args, HTTP, TCP, UDP, GRPC, H2PING, TTL, "
                "DockerContainerID (with Args), AliasService or AliasNode")
        if kind == "docker" and not self.command:
            raise CheckDefinitionError("Docker checks need Args (or Script) to run in the container")
        if self.output_max_size < 0:
            raise CheckDefinitionError("MaxOutputMaxSize must be positive")
        for name in ("success_before_passing", "failures_before_warning", "failures_before_critical"):
            if getattr(self, name) < 0:
                raise CheckDefinitionError(f"{_pascal(name)} must not be negative")
        if self.failures_before_warning > self.failures_before_critical:
            raise CheckDefinitionError("FailuresBeforeWarning can't be higher than FailuresBeforeCritical")
        if self.timeout < 0:
            raise CheckDefinitionError("Timeout must not be negative")

    def normalized(self, *, min_interval: float = MIN_INTERVAL) -> CheckDefinition:
        """A copy as the agent should store it: interval raised to ``min_interval``, output cap set.

        Consul raises intervals below 1 s to 1 s (with a warning) rather than refusing them.
        """
        interval = self.interval
        if self.kind not in ("ttl", "alias") and 0 < interval < min_interval:
            interval = min_interval
        return dataclasses.replace(
            self, interval=interval, output_max_size=self.output_max_size or DEFAULT_OUTPUT_MAX_SIZE)

    # -- views for the HTTP API ---------------------------------------------------------------

    @property
    def interval_str(self) -> str:
        return format_duration(self.interval) if self.interval > 0 else ""

    @property
    def timeout_str(self) -> str:
        return format_duration(self.timeout) if self.timeout > 0 else ""

    def definition_json(self) -> dict[str, Any]:
        """The ``Definition`` object of ``/v1/agent/checks`` (Consul's HealthCheckDefinition).

        Empty fields are omitted and durations are Go strings, as Consul marshals it.
        """
        out: dict[str, Any] = {}

        def put(key: str, value: Any) -> None:
            if value:
                out[key] = value

        put("HTTP", self.http)
        put("TLSServerName", self.tls_server_name)
        put("TLSSkipVerify", self.tls_skip_verify)
        put("Header", {k: list(v) for k, v in self.header.items()})
        put("Method", self.method)
        put("Body", self.body)
        put("DisableRedirects", self.disable_redirects)
        put("TCP", self.tcp)
        put("UDP", self.udp)
        put("H2PING", self.h2ping)
        if self.h2ping:
            out["H2PingUseTLS"] = self.h2ping_use_tls
        put("GRPC", self.grpc)
        put("GRPCUseTLS", self.grpc_use_tls)
        put("Interval", self.interval_str)
        put("OutputMaxSize", self.output_max_size)
        put("Timeout", self.timeout_str)
        if self.deregister_critical_service_after > 0:
            out["DeregisterCriticalServiceAfter"] = format_duration(self.deregister_critical_service_after)
        put("ScriptArgs", list(self.args))
        put("DockerContainerID", self.docker_container_id)
        put("Shell", self.shell)
        put("AliasNode", self.alias_node)
        put("AliasService", self.alias_service)
        if self.ttl > 0:
            out["TTL"] = format_duration(self.ttl)
        return out

    def to_health_check(self, node: str, *, service_name: str = "", service_tags: list[str] | None = None,
                        status: str | None = None, output: str = "") -> HealthCheck:
        """A :class:`~beacon.model.HealthCheck` row for this check (initial status unless given)."""
        return HealthCheck(
            node=node, check_id=self.check_id, name=self.name, status=status or self.status,
            notes=self.notes, output=output, service_id=self.service_id, service_name=service_name,
            service_tags=list(service_tags or []), type=self.type, interval=self.interval_str,
            timeout=self.timeout_str, definition=self.definition_json())


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))
