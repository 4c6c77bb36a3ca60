"""`beacon run|ps|stop|rm|logs|exec`: the docker CLI's container commands, against the engine socket.

The socket is, in order: ``-engine-socket PATH`` or ``-H unix://PATH``; ``$BEACON_ENGINE_SOCKET``;
``$DOCKER_HOST`` when it is a ``unix://`` URL; else ``/tmp/beacon-dev/engine.sock`` (the default of
``beacon engine``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from beacon.runtime._client import ClientError, EngineClient, demux
from beacon.runtime._errors import InvalidParameter
from beacon.runtime._model import parse_publish, parse_restart

DEFAULT_SOCKET = "/tmp/beacon-dev/engine.sock"


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    # -h is --hostname in `docker run`, so help is only --help
    p = argparse.ArgumentParser(prog=f"beacon {prog}", description=description, allow_abbrev=False,
                                add_help=False)
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument("-engine-socket", "--engine-socket", dest="socket", default=None,
                   help=f"engine socket (env BEACON_ENGINE_SOCKET, default {DEFAULT_SOCKET})")
    p.add_argument("-H", "--host", dest="host", default=None, help="unix://PATH of the engine socket")
    return p


def _client(args: argparse.Namespace) -> EngineClient:
    path = args.socket
    if not path and args.host:
        if not args.host.startswith("unix://"):
            raise ClientError(0, f"only unix:// engine sockets are supported, got {args.host!r}")
        path = args.host[len("unix://"):]
    docker_host = os.environ.get("DOCKER_HOST", "")
    path = path or os.environ.get("BEACON_ENGINE_SOCKET") or (
        docker_host[len("unix://"):] if docker_host.startswith("unix://") else "") or DEFAULT_SOCKET
    return EngineClient(path)


def _duration_ns(text: str) -> int:
    """``30s``, ``1m30s``, ``500ms`` or plain seconds -> nanoseconds."""
    units = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
    total, num, i = 0.0, "", 0
    text = text.strip()
    if text.replace(".", "", 1).isdigit():
        return int(float(text) * 1e9)
    while i < len(text):
        if text[i].isdigit() or text[i] == ".":
            num += text[i]
            i += 1
            continue
        unit = next((u for u in ("ns", "us", "ms", "s", "m", "h") if text.startswith(u, i)), None)
        if unit is None or not num:
            raise InvalidParameter(f"invalid duration {text!r}")
        total += float(num) * units[unit]
        num, i = "", i + len(unit)
    if num:
        raise InvalidParameter(f"invalid duration {text!r}: missing unit")
    return int(total)


def _main(fn: Any, argv: list[str]) -> int:
    try:
        return int(fn(argv) or 0)
    except ClientError as exc:
        print(f"Error response from engine: {exc.message}" if exc.status else f"Error: {exc.message}",
              file=sys.stderr)
        if "executable file not found" in exc.message:
            return 127  # as `docker run` exits
        return 125 if exc.status else 1
    except InvalidParameter as exc:
        print(f"Error: {exc.message}", file=sys.stderr)
        return 125


def _stream_output(chunks: Any) -> None:
    for stream, data in demux(chunks):
        out = sys.stderr if stream == 2 else sys.stdout
        out.buffer.write(data)
        out.flush()


def _run(argv: list[str]) -> int:
    p = _parser("run", "Create and start a container (the command runs on the host filesystem)")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("--name", "-name")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-l", "--label", action="append", default=[])
    p.add_argument("-p", "--publish", action="append", default=[])
    p.add_argument("-P", "--publish-all", action="store_true")
    p.add_argument("--expose", action="append", default=[])
    p.add_argument("--rm", action="store_true")
    p.add_argument("--restart", default="no")
    p.add_argument("-w", "--workdir", default="")
    p.add_argument("--hostname", "-h", default="")
    p.add_argument("--stop-signal", default="")
    p.add_argument("--stop-timeout", type=int, default=None)
    p.add_argument("--health-cmd")
    p.add_argument("--health-interval", default="30s")
    p.add_argument("--health-timeout", default="30s")
    p.add_argument("--health-retries", type=int, default=3)
    p.add_argument("--health-start-period", default="0s")
    p.add_argument("image")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    client = _client(args)
    exposed: dict[str, dict[str, Any]] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for spec in args.publish:
        key, binding = parse_publish(spec)
        exposed[key] = {}
        bindings.setdefault(key, []).append(binding)
    for spec in args.expose:
        exposed[parse_publish(spec)[0]] = {}
    env = [e if "=" in e else f"{e}={os.environ.get(e, '')}" for e in args.env]
    labels = dict((item.partition("=")[0], item.partition("=")[2]) for item in args.label)
    body: dict[str, Any] = {
        "Image": args.image, "Cmd": args.command or None, "Env": env, "Labels": labels,
        "ExposedPorts": exposed, "WorkingDir": args.workdir, "Hostname": args.hostname,
        "StopSignal": args.stop_signal or None, "StopTimeout": args.stop_timeout,
        "HostConfig": {"PortBindings": bindings, "PublishAllPorts": args.publish_all,
                       "RestartPolicy": parse_restart(args.restart), "AutoRemove": args.rm and args.detach},
    }
    if args.health_cmd:
        body["Healthcheck"] = {"Test": ["CMD-SHELL", args.health_cmd],
                               "Interval": _duration_ns(args.health_interval),
                               "Timeout": _duration_ns(args.health_timeout), "Retries": args.health_retries,
                               "StartPeriod": _duration_ns(args.health_start_period)}
    created = client.json("POST", "/containers/create", {"name": args.name} if args.name else None, body)
    cid = created["Id"]
    try:
        client.request("POST", client.container_path(cid, "start")).read()
    except ClientError:
        if args.rm:
            client.request("DELETE", client.container_path(cid), {"force": 1}).read()
        raise
    if args.detach:
        print(cid)
        return 0
    _stream_output(client.request("GET", client.container_path(cid, "logs"),
                                  {"follow": 1, "stdout": 1, "stderr": 1}, timeout=None).chunks())
    code = client.json("POST", client.container_path(cid, "wait"))["StatusCode"]
    if args.rm:
        client.request("DELETE", client.container_path(cid), {"force": 1}).read()
    return int(code)


def _ports_text(ports: list[dict[str, Any]]) -> str:
    out = []
    for p in ports:
        if p.get("PublicPort"):
            out.append(f"{p.get('IP', '')}:{p['PublicPort']}->{p['PrivatePort']}/{p['Type']}")
        else:
            out.append(f"{p['PrivatePort']}/{p['Type']}")
    return ", ".join(out)


def _ps(argv: list[str]) -> int:
    p = _parser("ps", "List containers")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-f", "--filter", action="append", default=[])
    p.add_argument("--no-trunc", action="store_true")
    args = p.parse_args(argv)
    filters: dict[str, list[str]] = {}
    for item in args.filter:
        key, _, value = item.partition("=")
        filters.setdefault(key, []).append(value)
    import json

    query = {"all": int(args.all), "filters": json.dumps(filters) if filters else None}
    rows = _client(args).json("GET", "/containers/json", query)
    if args.quiet:
        for c in rows:
            print(c["Id"] if args.no_trunc else c["Id"][:12])
        return 0
    table = [("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES")]
    for c in rows:
        command = c["Command"] if args.no_trunc or len(c["Command"]) <= 20 else c["Command"][:19] + "…"
        table.append((c["Id"] if args.no_trunc else c["Id"][:12], c["Image"], f'"{command}"',
                      _ago(c["Created"]), c["Status"], _ports_text(c["Ports"]),
                      ",".join(n.lstrip("/") for n in c["Names"])))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _ago(created: int) -> str:
    from beacon.runtime._views import human_duration

    return human_duration(time.time() - created) + " ago"


def _each(name: str, description: str, action: Any) -> Any:
    def command(argv: list[str]) -> int:
        p = _parser(name, description)
        if name == "stop":
            p.add_argument("-t", "--time", "--timeout", dest="time", type=int, default=None)
        if name == "rm":
            p.add_argument("-f", "--force", action="store_true")
        p.add_argument("containers", nargs="+")
        args = p.parse_args(argv)
        client, failed = _client(args), 0
        for ref in args.containers:
            try:
                action(client, ref, args)
                print(ref)
            except ClientError as exc:
                print(f"Error response from engine: {exc.message}", file=sys.stderr)
                failed = 1
        return failed

    return command


def _stop_one(client: EngineClient, ref: str, args: argparse.Namespace) -> None:
    timeout = None if args.time is None else args.time + 30
    client.request("POST", client.container_path(ref, "stop"), {"t": args.time}, timeout=timeout).read()


def _rm_one(client: EngineClient, ref: str, args: argparse.Namespace) -> None:
    client.request("DELETE", client.container_path(ref), {"force": int(args.force)}).read()


def _logs(argv: list[str]) -> int:
    p = _parser("logs", "Print a container's output")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-n", "--tail", default="all")
    p.add_argument("-t", "--timestamps", action="store_true")
    p.add_argument("container")
    args = p.parse_args(argv)
    client = _client(args)
    query = {"stdout": 1, "stderr": 1, "follow": int(args.follow), "tail": args.tail,
             "timestamps": int(args.timestamps)}
    _stream_output(client.request("GET", client.container_path(args.container, "logs"), query,
                                  timeout=None if args.follow else False).chunks())
    return 0


def _exec(argv: list[str]) -> int:
    p = _parser("exec", "Run a command in a running container")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-w", "--workdir", default="")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    if not args.command:
        p.error("exec needs a command")
    client = _client(args)
    body = {"Cmd": args.command, "Env": args.env, "WorkingDir": args.workdir, "AttachStdout": True,
            "AttachStderr": True}
    exec_id = client.json("POST", client.container_path(args.container, "exec"), None, body)["Id"]
    if args.detach:
        client.request("POST", f"/exec/{exec_id}/start", None, {"Detach": True}).read()
        return 0
    _stream_output(client.request("POST", f"/exec/{exec_id}/start", None, {"Detach": False}, upgrade=True,
                                  timeout=None).chunks())
    return int(client.json("GET", f"/exec/{exec_id}/json").get("ExitCode") or 0)


COMMANDS = {
    "run": _run, "ps": _ps, "logs": _logs, "exec": _exec,
    "stop": _each("stop", "Stop running containers (SIGTERM, then SIGKILL after -t seconds)", _stop_one),
    "rm": _each("rm", "Remove containers", _rm_one),
}


def command(name: str) -> Any:
    return lambda argv: _main(COMMANDS[name], argv)


def run(argv: list[str]) -> int:
    """`beacon containers <run|ps|stop|rm|logs|exec> ...`"""
    if not argv or argv[0] not in COMMANDS:
        print("Usage: beacon containers <" + "|".join(COMMANDS) + "> [args]", file=sys.stderr)
        return 1
    return _main(COMMANDS[argv[0]], argv[1:])
