"""Dockerfile instructions that change an image's config (shared by ``import --change`` and the builder).

``parse(text)`` splits a Dockerfile into ``(KEYWORD, args)`` with line continuations and comments
handled; ``apply(config, keyword, args)`` applies a config-only instruction (CMD, ENV, ...) to an image
config's ``config`` object in place.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from beacon.runtime._errors import InvalidParameter

CONFIG_INSTRUCTIONS = ("CMD", "ENTRYPOINT", "ENV", "WORKDIR", "USER", "EXPOSE", "LABEL", "VOLUME", "STOPSIGNAL",
                       "HEALTHCHECK", "ONBUILD", "MAINTAINER", "SHELL")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)")
_UNITS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}


def parse(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    if pending.strip():
        keyword, _, args = pending.strip().partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def exec_form(args: str) -> list[str] | None:
    """``["a", "b"]`` as a list, or None when ``args`` is in shell form."""
    if args.startswith("["):
        try:
            value = json.loads(args)
        except ValueError:
            return None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return None


def command(args: str) -> list[str]:
    form = exec_form(args)
    return form if form is not None else ["/bin/sh", "-c", args]


def key_values(args: str, what: str) -> list[tuple[str, str]]:
    """``ENV a=1 b="x y"`` or the old ``ENV a 1 2`` form."""
    try:
        words = shlex.split(args, posix=True)
    except ValueError as exc:
        raise InvalidParameter(f"{what}: {exc}") from exc
    if not words:
        raise InvalidParameter(f"{what} requires at least one argument")
    if "=" not in words[0]:
        key, _, value = args.partition(" ")
        return [(key, value.strip())]
    out = []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise InvalidParameter(f"{what} names can not be blank: {word!r}")
        out.append((key, value))
    return out


def duration_ns(text: str) -> int:
    total, pos = 0, 0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += int(float(m.group(1)) * _UNITS[m.group(2)])
        pos = m.end()
    if pos != len(text) or not text:
        raise InvalidParameter(f"invalid duration {text!r}")
    return total


def set_env(env: list[str], key: str, value: str) -> list[str]:
    return [e for e in env if e.partition("=")[0] != key] + [f"{key}={value}"]


def expand(text: str, env: list[str]) -> str:
    """``$VAR`` and ``${VAR}`` from ``env`` (the builder's ENV and ARG values)."""
    values = dict(e.partition("=")[::2] for e in env)
    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", lambda m: values.get(m.group(1) or m.group(2), ""), text)


def apply(config: dict[str, Any], keyword: str, args: str) -> None:
    if keyword == "CMD":
        config["Cmd"] = command(args)
        config["_cmd_set"] = True  # a later ENTRYPOINT keeps it (see strip_marks)
    elif keyword == "ENTRYPOINT":
        config["Entrypoint"] = command(args)
        if not config.get("_cmd_set"):
            config["Cmd"] = None  # as Docker: ENTRYPOINT drops a CMD inherited from the base image
    elif keyword == "ENV":
        env = list(config.get("Env") or [])
        for key, value in key_values(args, "ENV"):
            env = set_env(env, key, expand(value, env))
        config["Env"] = env
    elif keyword == "WORKDIR":
        wd = expand(args, config.get("Env") or [])
        config["WorkingDir"] = wd if wd.startswith("/") else (config.get("WorkingDir") or "/").rstrip("/") + "/" + wd
    elif keyword == "USER":
        config["User"] = expand(args, config.get("Env") or [])
    elif keyword == "EXPOSE":
        ports = dict(config.get("ExposedPorts") or {})
        for p in args.split():
            p = expand(p, config.get("Env") or [])
            ports[p if "/" in p else f"{p}/tcp"] = {}
        config["ExposedPorts"] = ports
    elif keyword == "LABEL":
        labels = dict(config.get("Labels") or {})
        labels.update(key_values(args, "LABEL"))
        config["Labels"] = labels
    elif keyword == "VOLUME":
        vols = dict(config.get("Volumes") or {})
        for v in exec_form(args) or args.split():
            vols[v] = {}
        config["Volumes"] = vols
    elif keyword == "STOPSIGNAL":
        config["StopSignal"] = args
    elif keyword == "HEALTHCHECK":
        config["Healthcheck"] = healthcheck(args)
    elif keyword == "SHELL":
        config["Shell"] = exec_form(args)
    elif keyword in ("ONBUILD", "MAINTAINER"):
        pass
    else:
        raise InvalidParameter(f"{keyword} is not a valid change command")


def healthcheck(args: str) -> dict[str, Any]:
    words = args.split()
    opts: dict[str, Any] = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        field = {"interval": "Interval", "timeout": "Timeout", "start-period": "StartPeriod",
                 "retries": "Retries", "start-interval": "StartInterval"}.get(key)
        if field is None:
            raise InvalidParameter(f"unknown HEALTHCHECK flag --{key}")
        opts[field] = int(value) if field == "Retries" else duration_ns(value)
    if not words:
        raise InvalidParameter("HEALTHCHECK requires NONE or CMD")
    kind, rest = words[0].upper(), args.split(None, len(args.split()) - len(words) + 1)[-1] if len(words) > 1 else ""
    if kind == "NONE":
        return {"Test": ["NONE"]}
    if kind != "CMD":
        raise InvalidParameter("HEALTHCHECK requires NONE or CMD")
    form = exec_form(rest)
    return {"Test": ["CMD", *form] if form is not None else ["CMD-SHELL", rest], **opts}


def strip_marks(config: dict[str, Any]) -> dict[str, Any]:
    """The config without the builder's bookkeeping keys."""
    return {k: v for k, v in config.items() if not k.startswith("_")}
