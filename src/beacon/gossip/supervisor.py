"""Run and supervise one ``serf agent`` child process for one gossip pool (LAN or WAN).

The child binds its gossip listeners (TCP and UDP) on the agent's bind address and the pool's port
(Consul's ``serf_lan`` 8301, ``serf_wan`` 8302), advertises the agent's advertise address, and serves
its RPC on loopback only, on a port picked free at start and guarded by a random RPC auth key. Its
configuration (auth key included) goes into a 0600 JSON file in the data dir rather than onto the
command line, where `ps` would show it.

State that must survive a restart lives in the data dir, as Consul keeps it:
``<data_dir>/serf/<pool>.snapshot`` (members and Lamport clocks: a restarted agent rejoins the
members it knew and does not replay old events) and ``<data_dir>/serf/<pool>.keyring`` (the gossip
keys; written from the ``-encrypt`` key on first start, then owned by Serf as keys rotate).

If the child dies without being asked to, it is restarted with backoff; the snapshot makes it rejoin.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from beacon.gossip.rpc import SerfClient, SerfError

log = logging.getLogger("beacon.gossip")

LAN_PORT = 8301
WAN_PORT = 8302
Pool = Literal["lan", "wan"]


class SerfNotFound(RuntimeError):
    """No usable ``serf`` binary: the message is the one line an operator needs."""


class SerfStartError(RuntimeError):
    pass


def find_serf(path: str | None = None) -> str:
    """The serf binary to run: `path` if given (-serf-bin), else `serf` on PATH."""
    if path:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        raise SerfNotFound(f"gossip needs the serf agent: {path} is not an executable file "
                           "(install the Debian package `serf`: apt-get install serf)")
    found = shutil.which("serf")
    if found is None:
        raise SerfNotFound("gossip needs the serf agent binary, not found on PATH: install the Debian package "
                           "`serf` (apt-get install serf) or pass -serf-bin PATH")
    return found


def validate_gossip_key(key: str) -> bytes:
    """A gossip key is base64 of 16, 24 or 32 bytes (AES-128/192/256), as memberlist accepts."""
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("gossip encryption key must be base64 (generate one with `beacon keygen`)") from None
    if len(raw) not in (16, 24, 32):
        raise ValueError(f"gossip encryption key must decode to 16, 24 or 32 bytes, got {len(raw)}")
    return raw


def free_port(host: str, udp: bool = False) -> int:
    """A port free on `host` for TCP (and UDP too when `udp`): the kernel picks it, then we release it.
    A race with another process taking it in between is caught by the child failing to bind, after
    which the caller picks again."""
    for _ in range(50):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if not udp:
            return port
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as u:
                u.bind((host, port))
            return port
        except OSError:
            continue
    raise OSError(f"no free TCP+UDP port on {host}")


@dataclass
class SerfConfig:
    """What one pool's Serf agent needs. `tags` are the member's gossip tags (see tags.py)."""

    node_name: str
    data_dir: str
    bind_addr: str = "127.0.0.1"
    port: int = LAN_PORT
    advertise_addr: str = ""
    advertise_port: int = 0
    pool: Pool = "lan"
    tags: dict[str, str] = field(default_factory=dict)
    encrypt: str = ""
    profile: str = ""                   # lan | wan | local; default follows the pool
    serf_bin: str | None = None
    rejoin_after_leave: bool = False    # Consul's -rejoin
    reconnect_timeout: str = "72h"      # Consul's reconnect_timeout (failed members are reaped after it)
    tombstone_timeout: str = "24h"
    log_level: str = "info"
    rpc_host: str = "127.0.0.1"
    user_event_size_limit: int = 0      # bytes of name + payload; 0 keeps Serf's 512 (its cap is 9 KiB)

    def effective_profile(self) -> str:
        return self.profile or ("wan" if self.pool == "wan" else "lan")


class SerfAgent:
    """The supervised child. ``await start()`` returns once its RPC answers; ``rpc_addr`` and
    ``auth_key`` then reach it; ``connect()`` opens an authenticated client."""

    def __init__(self, config: SerfConfig, *, restart: bool = True,
                 max_backoff: float = 10.0) -> None:
        self.config = config
        self.binary = find_serf(config.serf_bin)  # fail fast, with the one-line reason
        if config.encrypt:
            validate_gossip_key(config.encrypt)
        self.dir = os.path.join(config.data_dir, "serf")
        self.snapshot_path = os.path.join(self.dir, f"{config.pool}.snapshot")
        self.keyring_path = os.path.join(self.dir, f"{config.pool}.keyring")
        exposed = [a for a in (config.bind_addr, config.advertise_addr) if a and not _is_loopback(a)]
        if exposed and not config.encrypt and not os.path.exists(self.keyring_path):
            # Serf's keyring is what authenticates gossip (AES-GCM): without it anyone who can reach
            # the port can join, mark members failed or fire events.
            raise ValueError(f"refusing to gossip on {exposed[0]} without an encryption key: pass -encrypt "
                             "(generate one with `beacon keygen`) or bind to loopback")
        self.config_path = os.path.join(self.dir, f"{config.pool}.json")
        self.log_path = os.path.join(self.dir, f"{config.pool}.log")
        self.auth_key = secrets.token_urlsafe(24)
        self.rpc_port = 0
        self.restart = restart
        self.max_backoff = max_backoff
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.started = asyncio.Event()
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None
        self._restart_callbacks: list[Callable[[], None]] = []

    @property
    def rpc_addr(self) -> tuple[str, int]:
        return self.config.rpc_host, self.rpc_port

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    @property
    def encrypted(self) -> bool:
        return os.path.exists(self.keyring_path)

    def on_restart(self, callback: Callable[[], None]) -> None:
        """Called after the supervisor brought a dead child back (RPC connections must be reopened)."""
        self._restart_callbacks.append(callback)

    async def connect(self, timeout: float = 10.0) -> SerfClient:
        return await SerfClient.connect(self.config.rpc_host, self.rpc_port, self.auth_key, timeout=timeout)

    # ------------------------------------------------------------------ files
    def _prepare(self) -> None:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        cfg = self.config
        if cfg.encrypt:
            if not os.path.exists(self.keyring_path):
                self._write_private(self.keyring_path, json.dumps([cfg.encrypt]))
            else:
                with open(self.keyring_path) as f:
                    keys = json.load(f)
                if cfg.encrypt not in keys:
                    # As Consul: once a keyring exists, it (not -encrypt) is the truth; rotation goes
                    # through the keyring API, so a stale -encrypt in a unit file must not undo it.
                    log.warning("serf %s: keyring %s exists and does not hold the -encrypt key; using the "
                                "keyring (rotate keys with the keyring API)", cfg.pool, self.keyring_path)
        conf: dict[str, object] = {
            "node_name": cfg.node_name,
            "bind": f"{_host(cfg.bind_addr)}:{cfg.port}",
            "rpc_addr": f"{_host(cfg.rpc_host)}:{self.rpc_port}",
            "rpc_auth": self.auth_key,
            "profile": cfg.effective_profile(),
            "snapshot_path": self.snapshot_path,
            "rejoin_after_leave": cfg.rejoin_after_leave,
            "reconnect_timeout": cfg.reconnect_timeout,
            "tombstone_timeout": cfg.tombstone_timeout,
            "log_level": cfg.log_level,
            "tags": dict(cfg.tags),
            # Terminating the child must not announce a leave: a supervised restart, or an agent
            # stopped without `leave`, is a failure to the others, as with Consul.
            "leave_on_terminate": False,
            "skip_leave_on_interrupt": True,
        }
        if cfg.user_event_size_limit:
            conf["user_event_size_limit"] = cfg.user_event_size_limit
        if cfg.advertise_addr:
            conf["advertise"] = f"{_host(cfg.advertise_addr)}:{cfg.advertise_port or cfg.port}"
        if os.path.exists(self.keyring_path):
            conf["keyring_file"] = self.keyring_path
        self._write_private(self.config_path, json.dumps(conf, indent=2))

    @staticmethod
    def _write_private(path: str, text: str) -> None:
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)

    # ------------------------------------------------------------------ lifecycle
    async def start(self, timeout: float = 30.0) -> None:
        self._stopping = False
        await self._spawn(timeout)
        self.started.set()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(), name=f"serf-{self.config.pool}")

    async def _spawn(self, timeout: float, attempts: int = 3) -> None:
        last = ""
        for attempt in range(attempts):
            if not self.rpc_port or attempt:
                self.rpc_port = free_port(self.config.rpc_host)
            self._prepare()
            self._rotate_log()
            logf = open(self.log_path, "ab")
            try:
                self.proc = await asyncio.create_subprocess_exec(
                    self.binary, "agent", f"-config-file={self.config_path}",
                    stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C on the terminal reaches us, not the child
                    preexec_fn=_die_with_parent)
            finally:
                logf.close()
            start = self._log_size()
            ok, last = await self._wait_ready(timeout, start)
            if ok:
                log.info("serf %s agent running (pid %d, gossip %s:%d, rpc %s:%d)", self.config.pool,
                         self.proc.pid, self.config.bind_addr, self.config.port, *self.rpc_addr)
                return
            if "RPC" not in last or "address already in use" not in last:
                break  # only a lost race for the RPC port is worth another try
        raise SerfStartError(f"serf {self.config.pool} agent did not start: {last or 'no output'} "
                             f"(log: {self.log_path})")

    def _rotate_log(self, limit: int = 16 * 1024 * 1024) -> None:
        """The child appends to its log for as long as it runs; keep one old file per restart past `limit`."""
        if self._log_size() > limit:
            os.replace(self.log_path, self.log_path + ".1")

    def _log_size(self) -> int:
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def _log_tail(self, since: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(since - 4096, 0) if since else max(self._log_size() - 4096, 0))
                lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        errors = [ln for ln in lines if "rror" in ln or "ailed" in ln]
        return (errors or lines or [""])[-1]

    async def _wait_ready(self, timeout: float, log_start: int) -> tuple[bool, str]:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        delay = 0.02
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                return False, self._log_tail()
            try:
                client = await self.connect(timeout=2.0)
            except SerfError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.25)
                continue
            await client.close()
            return True, ""
        await self._kill()
        return False, f"RPC not answering after {timeout}s; {self._log_tail()}"

    async def _supervise(self) -> None:
        backoff = 0.5
        spawned_at = time.monotonic()
        while not self._stopping:
            assert self.proc is not None
            code = await self.proc.wait()
            if self._stopping or not self.restart:
                return
            if time.monotonic() - spawned_at > 30:
                backoff = 0.5  # it had been running fine: a fresh failure, not a crash loop
            log.warning("serf %s agent exited (code %s): %s; restarting in %.1fs", self.config.pool, code,
                        self._log_tail(), backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)
            if self._stopping:
                return
            try:
                await self._spawn(30.0)
            except (SerfStartError, OSError) as exc:
                log.error("%s", exc)
                continue
            spawned_at = time.monotonic()
            self.restarts += 1
            for cb in list(self._restart_callbacks):
                try:
                    cb()
                except Exception:  # a listener's bug must not stop supervision
                    log.exception("serf restart callback failed")

    async def leave(self, timeout: float = 30.0) -> None:
        """Graceful leave: the others see this member `left`; the child then exits by itself."""
        self._stopping = True
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            client = await self.connect()
            try:
                await client.leave()
            finally:
                await client.close()
        except SerfError as exc:
            log.warning("serf %s leave: %s", self.config.pool, exc)
        await self.stop(timeout)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the child without a leave (the others will see it fail, as after a crash)."""
        self._stopping = True
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                await self._kill()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None

    async def _kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the agent dies, however it dies (kill -9 included), so a dead
    agent's Serf stops answering probes and the others see the node fail."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or 0.0.0.0-like wildcard: treat as exposed


def _host(addr: str) -> str:
    return f"[{addr}]" if ":" in addr and not addr.startswith("[") else addr
