"""`beacon watch -type TYPE [options] [HANDLER...]`: long-poll a blocking endpoint and run HANDLER once
per real change of the view, with the view's JSON on stdin and ``CONSUL_INDEX`` in the environment.

Without a handler the current view is printed once, as ``consul watch`` does. A returned index that
is not newer, or a view equal to the last one handled (an index moved by a write that changed nothing
visible here), does not run the handler. An index that goes backwards (a snapshot restore) resets the
watch to 0, as HashiCorp's client rules say.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from typing import Any
from urllib.parse import quote, urlencode

from beacon.cli.flags import FlagParser, first_positional
from beacon.cli.http import Client, CLIError, add_http_flags
from beacon.cli.lock import get_with_index

TYPES = ("key", "keyprefix", "services", "nodes", "service", "checks", "event")
WAIT = "60s"


def build_path(args: Any) -> tuple[str, dict[str, Any], bool]:
    """(path, query, single): `single` means the view is the first element (or null)."""
    t = args.type
    q: dict[str, Any] = {}
    if args.stale:
        q["stale"] = ""
    if t == "key":
        if not args.key:
            raise CLIError("Must specify a single key to watch (-key)")
        return "/v1/kv/" + quote(args.key), q, True
    if t == "keyprefix":
        if args.prefix is None:
            raise CLIError("Must specify a key prefix to watch (-prefix)")
        q["recurse"] = ""
        return "/v1/kv/" + quote(args.prefix), q, False
    if t == "services":
        return "/v1/catalog/services", q, False
    if t == "nodes":
        return "/v1/catalog/nodes", q, False
    if t == "service":
        if not args.service:
            raise CLIError("Must specify a service to watch (-service)")
        if args.passingonly:
            q["passing"] = "1"
        if args.tag:
            q["tag"] = args.tag
        return "/v1/health/service/" + quote(args.service), q, False
    if t == "checks":
        if args.service and args.state:
            raise CLIError("Cannot specify service and state")
        if args.service:
            return "/v1/health/checks/" + quote(args.service), q, False
        return "/v1/health/state/" + quote(args.state or "any"), q, False
    if args.name:
        q["name"] = args.name
    return "/v1/event/list", q, False


def _url(path: str, q: dict[str, Any]) -> str:
    flags = [k for k, v in q.items() if v == ""]
    rest = {k: v for k, v in q.items() if v != ""}
    qs = "&".join(flags + ([urlencode(rest)] if rest else []))
    return path + ("?" + qs if qs else "")


def fetch(client: Client, path: str, q: dict[str, Any], single: bool, index: int) -> tuple[int, Any]:
    params = dict(q)
    if index:
        params.update(index=str(index), wait=WAIT)
    status, data, new_index = get_with_index(client, _url(path, params), timeout=120)
    if status == 404:
        view: Any = None if single else []
    else:
        view = json.loads(data) if data else None
        if single and isinstance(view, list):
            view = view[0] if view else None
    return new_index, view


def run_handler(handler: list[str], shell: bool, view: Any, index: int) -> int:
    argv = ["/bin/sh", "-c", " ".join(handler)] if shell else handler
    env = dict(os.environ, CONSUL_INDEX=str(index))
    proc = subprocess.run(argv, input=json.dumps(view, indent=4).encode(), env=env, check=False)
    return proc.returncode


def watch_loop(client: Client, path: str, q: dict[str, Any], single: bool, handler: list[str], shell: bool,
               stop: threading.Event) -> int:
    index = 0
    last_view: Any = object()
    failures = 0
    while not stop.is_set():
        try:
            new_index, view = fetch(client, path, q, single, index)
            failures = 0
        except CLIError as exc:
            failures += 1
            print(f"Error querying: {exc}", file=sys.stderr, flush=True)
            stop.wait(min(30.0, 0.5 * 2 ** min(failures, 6)))
            continue
        if new_index < index:
            index = 0  # went backwards (restore): start over
            continue
        if new_index == index and index != 0:
            continue
        index = max(new_index, 1)
        if view == last_view:
            continue
        last_view = view
        code = run_handler(handler, shell, view, index)
        if code != 0:
            print(f"Handler exited with code {code}", file=sys.stderr, flush=True)
    return 0


def run(argv: list[str]) -> int:
    p = FlagParser("beacon watch", "Watch a view of the catalog, KV or events and run a handler on changes.")
    add_http_flags(p)
    p.flag("type", required=True, choices=TYPES)
    p.flag("key", default="")
    p.flag("prefix", default=None)
    p.flag("service", default="")
    p.flag("tag", default="")
    p.flag("passingonly", action="store_true")
    p.flag("state", default="")
    p.flag("name", default="")
    p.flag("shell", default="true")
    p.add_argument("handler", nargs=argparse.REMAINDER)
    cut = first_positional(p, argv)  # the handler is the child's: argparse must not read its flags
    args = p.parse_args(argv[:cut])
    args.handler = argv[cut:]
    client = Client.from_args(args)
    try:
        path, q, single = build_path(args)
        if not args.handler:
            _, view = fetch(client, path, q, single, 0)
            print(json.dumps(view, indent=4))
            return 0
        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            stop.set()
            raise SystemExit(0)  # interrupts a long poll at once (a flag alone waits for it)

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
        shell = args.shell.lower() not in ("false", "0", "f")
        return watch_loop(client, path, q, single, args.handler, shell, stop)
    except CLIError as exc:
        print(f"Error! {exc}", file=sys.stderr)
        return 1
