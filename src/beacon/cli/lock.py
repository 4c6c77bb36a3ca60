"""`beacon lock [-n N] PREFIX CHILD...`: run a command while holding a lock (or one of N semaphore
slots) under a KV prefix, and kill it when the lock is lost.

The shape is Consul's ``consul lock`` (and its api ``Lock``/``Semaphore``):

* a TTL session (15 s, renewed every TTL/2) owns the lock; the session dies with this process's
  node or with a missed renewal;
* ``-n 1``: ``PREFIX/.lock`` is acquired with ``?acquire=`` (flags ``0x2ddccbc058a50c18``);
* ``-n N``: each contender writes ``PREFIX/<session>`` under its session (behavior ``delete``), and
  ``PREFIX/.lock`` holds ``{"Limit": N, "Holders": {session: true}}`` updated by CAS; holders whose
  contender key is gone are pruned;
* a monitor long-polls the lock key; if the lock is no longer ours (session destroyed or expired,
  holder pruned), the child gets SIGTERM and, 5 s later, SIGKILL; the command then exits 1.

The child runs with ``CONSUL_LOCK_HELD=true`` in its own process group (``sh -c`` unless
``-shell=false``). When it exits, the lock is released and the session destroyed; the exit code is 0,
or 2 if ``-child-exit-code`` is given and the child failed.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from beacon.cli.flags import FlagParser, first_positional
from beacon.cli.http import Client, CLIError, add_http_flags
from beacon.durations import parse_duration

LOCK_FLAG_VALUE = 0x2DDCCBC058A50C18
SEMAPHORE_FLAG_VALUE = 0xE0F69A2BAA414DE0
SESSION_TTL = "15s"
LOCK_RETRY = 1.0
WAIT = "15s"
KILL_GRACE = 5.0


def _kv_path(key: str, **params: Any) -> str:
    q = "&".join(f"{k}={quote(str(v))}" if v is not True else k for k, v in params.items() if v is not None)
    return "/v1/kv/" + quote(key) + ("?" + q if q else "")


def get_with_index(client: Client, path: str, timeout: float = 30.0) -> tuple[int, bytes, int]:
    """GET that also returns X-Consul-Index; 404 is an answer (missing key), not an error."""
    req = urllib.request.Request(client.base + path, method="GET")
    if client.token:
        req.add_header("X-Consul-Token", client.token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), int(resp.headers.get("X-Consul-Index") or 0)
    except urllib.error.HTTPError as exc:
        body = exc.read()
        if exc.code == 404:
            return 404, body, int(exc.headers.get("X-Consul-Index") or 0)
        raise CLIError(f"Unexpected response code: {exc.code} ({body.decode(errors='replace').strip()})") from None
    except OSError as exc:
        raise CLIError(f"Error connecting to Beacon agent at {client.base}: {exc}") from None


class Contender:
    """Shared plumbing: a session, its renewal, the blocking reads."""

    def __init__(self, client: Client, prefix: str, name: str, stop: threading.Event,
                 verbose: bool = False, behavior: str = "release") -> None:
        self.client = client
        self.prefix = prefix.rstrip("/")
        self.lock_key = self.prefix + "/.lock"
        self.stop = stop
        self.verbose = verbose
        self.lost = threading.Event()
        body = {"Name": name, "TTL": SESSION_TTL, "Behavior": behavior}
        self.session = client.put_json("/v1/session/create", body)["ID"]
        self._renewer = threading.Thread(target=self._renew_loop, name="session-renew", daemon=True)
        self._renewer.start()

    def log(self, msg: str) -> None:
        if self.verbose:
            print(f"Lock: {msg}", file=sys.stderr, flush=True)

    def _renew_loop(self) -> None:
        period = parse_duration(SESSION_TTL) / 2
        while not self.stop.wait(period) and not self.lost.is_set():
            try:
                status, _ = self.client.call("PUT", f"/v1/session/renew/{self.session}", ok=(200, 404))
            except CLIError as exc:
                self.log(f"session renewal failed (will retry): {exc}")
                continue
            if status == 404:
                self.log("session is gone")
                self.lost.set()
                return

    def get(self, key: str, index: int = 0, recurse: bool = False,
            deadline: float | None = None) -> tuple[int, Any]:
        """A (blocking, with `index`) read; the wait never runs past `deadline` (monotonic)."""
        params: dict[str, Any] = {"recurse": True if recurse else None}
        if index:
            wait = WAIT
            if deadline is not None:
                wait = f"{max(1, int(min(15.0, deadline - time.monotonic()) * 1000))}ms"
            params.update(index=index, wait=wait)
        status, data, idx = get_with_index(self.client, _kv_path(key, **params))
        return idx, (json.loads(data) if status == 200 and data else None)

    def put(self, key: str, value: bytes = b"", **params: Any) -> bool:
        _, data = self.client.call("PUT", _kv_path(key, **params), value)
        return bool(json.loads(data))

    def destroy(self) -> None:
        try:
            self.client.call("PUT", f"/v1/session/destroy/{self.session}")
        except CLIError as exc:
            self.log(f"failed to destroy session: {exc}")

    def monitor(self, monitor_retry: int) -> None:
        """Long-poll until the lock is not ours any more, then set `lost`."""
        index = 0
        failures = 0
        while not self.stop.is_set() and not self.lost.is_set():
            try:
                index, held = self.still_held(index)
                failures = 0
            except CLIError as exc:
                failures += 1
                if failures > monitor_retry:
                    self.log(f"monitor giving up: {exc}")
                    self.lost.set()
                    return
                self.stop.wait(1.0)
                continue
            if not held:
                self.lost.set()
                return

    def still_held(self, index: int) -> tuple[int, bool]:
        raise NotImplementedError


class Lock(Contender):
    def acquire(self, deadline: float | None) -> bool:
        index = 0
        while not self.stop.is_set():
            if deadline is not None and time.monotonic() > deadline:
                return False
            index, entries = self.get(self.lock_key, index, deadline=deadline)
            entry = entries[0] if entries else None
            if entry is not None and entry.get("Flags") != LOCK_FLAG_VALUE:
                raise CLIError(f"Existing key does not match lock use: {self.lock_key}")
            if entry is not None and entry.get("Session") and entry["Session"] != self.session:
                continue  # held: the next blocking read waits for a change
            if self.put(self.lock_key, b"", acquire=self.session, flags=LOCK_FLAG_VALUE):
                return True
            self.log("acquire refused (lock delay?); retrying")
            self.stop.wait(LOCK_RETRY)
            index = 0
        return False

    def still_held(self, index: int) -> tuple[int, bool]:
        index, entries = self.get(self.lock_key, index)
        return index, bool(entries) and entries[0].get("Session") == self.session

    def release(self) -> None:
        try:
            self.put(self.lock_key, b"", release=self.session, flags=LOCK_FLAG_VALUE)
        except CLIError as exc:
            self.log(f"failed to release: {exc}")


class Semaphore(Contender):
    def __init__(self, *args: Any, limit: int, **kw: Any) -> None:
        super().__init__(*args, behavior="delete", **kw)
        self.limit = limit
        self.contender_key = f"{self.prefix}/{self.session}"

    def _decode(self, entries: list[dict[str, Any]] | None) -> tuple[dict[str, Any] | None, dict[str, Any],
                                                                     set[str]]:
        lock_entry = None
        live: set[str] = set()
        for e in entries or []:
            if e["Key"] == self.lock_key:
                lock_entry = e
            elif e.get("Session"):
                live.add(e["Key"][len(self.prefix) + 1:])
        state: dict[str, Any] = {"Limit": self.limit, "Holders": {}}
        if lock_entry is not None:
            if lock_entry.get("Flags") != SEMAPHORE_FLAG_VALUE:
                raise CLIError(f"Existing key does not match semaphore use: {self.lock_key}")
            raw = base64.b64decode(lock_entry["Value"]) if lock_entry.get("Value") else b"{}"
            try:
                state = json.loads(raw)
            except ValueError:
                raise CLIError(f"Failed to decode semaphore lock at {self.lock_key}") from None
            if state.get("Limit") != self.limit:
                raise CLIError(f"semaphore limit conflict (lock: {state.get('Limit')}, local: {self.limit})")
        return lock_entry, state, live

    def acquire(self, deadline: float | None) -> bool:
        if not self.put(self.contender_key, b"", acquire=self.session, flags=SEMAPHORE_FLAG_VALUE):
            raise CLIError("failed to make contender entry")
        index = 0
        while not self.stop.is_set():
            if deadline is not None and time.monotonic() > deadline:
                return False
            index, entries = self.get(self.prefix + "/", index, recurse=True, deadline=deadline)
            lock_entry, state, live = self._decode(entries)
            holders = {s: True for s in state.get("Holders", {}) if s in live}
            if len(holders) >= self.limit:
                continue
            holders[self.session] = True
            body = json.dumps({"Limit": self.limit, "Holders": holders}).encode()
            cas = lock_entry["ModifyIndex"] if lock_entry else 0
            if self.put(self.lock_key, body, cas=cas, flags=SEMAPHORE_FLAG_VALUE):
                return True
            index = 0  # lost the CAS race: look again at once
        return False

    def still_held(self, index: int) -> tuple[int, bool]:
        """Held while we are in the holder set *and* our contender key lives (it dies with the session,
        before anyone prunes us from the set)."""
        index, entries = self.get(self.prefix + "/", index, recurse=True)
        lock_entry, state, live = self._decode(entries)
        return index, lock_entry is not None and self.session in state.get("Holders", {}) and self.session in live

    def release(self) -> None:
        try:
            for _ in range(10):
                _, entries = self.get(self.lock_key)
                if not entries:
                    break
                lock_entry, state, _ = self._decode(entries)
                holders = dict(state.get("Holders", {}))
                if holders.pop(self.session, None) is None:
                    break
                body = json.dumps({"Limit": self.limit, "Holders": holders}).encode()
                if self.put(self.lock_key, body, cas=entries[0]["ModifyIndex"], flags=SEMAPHORE_FLAG_VALUE):
                    break
            self.client.call("DELETE", _kv_path(self.contender_key))
        except CLIError as exc:
            self.log(f"failed to release: {exc}")


def _kill(child: subprocess.Popen[bytes], verbose: bool) -> None:
    if child.poll() is not None:
        return
    try:
        os.killpg(child.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        child.wait(KILL_GRACE)
    except subprocess.TimeoutExpired:
        if verbose:
            print("Lock: child ignored SIGTERM, sending SIGKILL", file=sys.stderr)
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.wait(5)


def run(argv: list[str]) -> int:
    p = FlagParser("beacon lock", "Run CHILD while holding a lock (or a semaphore slot) under PREFIX.")
    add_http_flags(p)
    p.flag("n", type=int, default=1, help="number of concurrent holders (a semaphore when > 1)")
    p.flag("name", default="")
    p.flag("timeout", default="0s", help="max time to wait for the lock (0: forever)")
    p.flag("monitor-retry", type=int, default=3)
    p.flag("shell", default="true")
    p.flag("child-exit-code", action="store_true")
    p.flag("pass-stdin", action="store_true")
    p.flag("verbose", action="store_true")
    p.add_argument("prefix")
    # Everything after PREFIX is the child command, flags included (`sh -c ...`), as in Consul: it is
    # cut off before argparse sees it, which would otherwise read the child's `-c` as an abbreviation.
    cut = first_positional(p, argv)
    args = p.parse_args(argv[:cut + 1])
    args.child = argv[cut + 1:]
    if not args.child:
        p.error("a child command is required after PREFIX")
    if args.n < 1:
        print("Error! Number of lock holders must be at least 1", file=sys.stderr)
        return 1
    try:
        timeout = parse_duration(args.timeout)
    except ValueError as exc:
        print(f"Error! -timeout: {exc}", file=sys.stderr)
        return 1
    use_shell = args.shell.lower() not in ("false", "0", "f")
    child_argv = ["/bin/sh", "-c", " ".join(args.child)] if use_shell else list(args.child)
    name = args.name or f"Beacon lock for '{' '.join(args.child)}' at '{args.prefix}'"
    stop = threading.Event()
    wake = threading.Event()
    acquiring = True

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()
        wake.set()
        if acquiring:
            raise KeyboardInterrupt  # interrupts a blocking read at once

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    client = Client.from_args(args)
    try:
        holder: Lock | Semaphore
        if args.n == 1:
            holder = Lock(client, args.prefix, name, stop, verbose=args.verbose)
        else:
            holder = Semaphore(client, args.prefix, name, stop, verbose=args.verbose, limit=args.n)
    except CLIError as exc:
        print(f"Error! {exc}", file=sys.stderr)
        return 1
    try:
        deadline = time.monotonic() + timeout if timeout > 0 else None
        ok = holder.acquire(deadline)
        acquiring = False
        if not ok:
            print("Shutdown triggered or timeout during lock acquisition", file=sys.stderr)
            holder.destroy()
            return 1
    except (CLIError, KeyboardInterrupt) as exc:
        print(f"Lock acquisition failed: {exc or 'interrupted'}", file=sys.stderr)
        stop.set()
        holder.destroy()
        return 1
    try:
        if args.verbose:
            print(f"Lock: acquired {'lock' if args.n == 1 else 'semaphore slot'} at {args.prefix}",
                  file=sys.stderr, flush=True)
        monitor = threading.Thread(target=holder.monitor, args=(args.monitor_retry,), daemon=True)
        monitor.start()
        env = dict(os.environ, CONSUL_LOCK_HELD="true")
        child = subprocess.Popen(child_argv, env=env, start_new_session=True,
                                 stdin=None if args.pass_stdin else subprocess.DEVNULL)

        def reap() -> None:
            child.wait()
            wake.set()

        threading.Thread(target=reap, daemon=True).start()
        threading.Thread(target=lambda: (holder.lost.wait(), wake.set()), daemon=True).start()
        wake.wait()
        if child.poll() is None:
            if holder.lost.is_set():
                print("Lock lost, killing child", file=sys.stderr, flush=True)
            _kill(child, args.verbose)
            code = 1
        else:
            code = 2 if args.child_exit_code and child.returncode != 0 else 0
    finally:
        stop.set()
        holder.release()
        holder.destroy()
    return code
