"""The etcd member a server agent runs and supervises, and the TLS material it uses.

Each server agent starts one ``etcd`` process (from PATH, or ``-etcd-bin``): data in
``<data-dir>/etcd``, peer traffic on ``-bind``/``-advertise`` at the server port (8300), and a client
URL on 127.0.0.1 at a port picked at start that only this agent is told about. If etcd exits while the
agent runs (a crash, a full disk), it is started again with backoff; its WAL and snapshots make that
safe, and while it is down the agent answers writes with errors and keeps serving stale reads.

TLS: with a cluster key (``-encrypt``), peer and client traffic use mutual TLS. The CA is derived from
the key (an ECDSA P-256 key computed from HKDF of the cluster key), so every server holding the key
trusts every other without distributing files; each server signs its own leaf certificate for its
addresses. Explicit files (``-etcd-ca-file``/``-etcd-cert-file``/``-etcd-key-file``) override that.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("beacon.etcd")


@dataclass(frozen=True)
class TLSFiles:
    ca: str
    cert: str
    key: str

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def derive_tls(cluster_key: str, out_dir: str, addresses: list[str]) -> TLSFiles:
    """CA from the cluster key, plus a leaf for this server's addresses (peer and client use)."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    secret = HKDF(hashes.SHA256(), 48, b"beacon-etcd-ca-v1", None).derive(base64.b64decode(cluster_key))
    order = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)
    ca_key = ec.derive_private_key(int.from_bytes(secret, "big") % (order - 1) + 1, ec.SECP256R1())
    fingerprint = hashlib.sha256(ca_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()[:16]
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Beacon etcd CA {fingerprint}")])
    ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(int(fingerprint, 16))
               .not_valid_before(start).not_valid_after(datetime.datetime(2100, 1, 1, tzinfo=datetime.UTC))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
               .add_extension(ski, critical=False)
               .sign(ca_key, hashes.SHA256()))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for a in sorted(set(addresses) | {"127.0.0.1"}):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(a.strip("[]"))))
        except ValueError:
            sans.append(x509.DNSName(a))
    now = datetime.datetime.now(datetime.UTC)
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "beacon-server")]))
            .issuer_name(ca_name).public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    os.makedirs(out_dir, mode=0o700, exist_ok=True)
    files = TLSFiles(os.path.join(out_dir, "ca.pem"), os.path.join(out_dir, "server.pem"),
                     os.path.join(out_dir, "server-key.pem"))
    with open(files.ca, "wb") as f:
        f.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    with open(files.cert, "wb") as f:
        f.write(leaf.public_bytes(serialization.Encoding.PEM))
    fd = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return files


def _die_with_parent() -> None:
    """In the child before exec: the kernel kills etcd if the agent dies, even by SIGKILL, so a
    crashed agent never leaves a member running that holds the data dir's lock."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _host(addr: str) -> str:
    return f"[{addr}]" if ":" in addr and not addr.startswith("[") else addr


class EtcdMember:
    """Starts, watches and stops one etcd process."""

    def __init__(self, name: str, data_dir: str, bind: str, advertise: str, peer_port: int,
                 tls: TLSFiles | None, etcd_bin: str = "") -> None:
        self.name = name
        self.dir = os.path.join(data_dir, "etcd")
        self.bind = bind
        self.advertise = advertise
        self.peer_port = peer_port
        self.tls = tls
        self.bin = etcd_bin or shutil.which("etcd") or ""
        if not self.bin or not os.access(self.bin, os.X_OK):
            raise RuntimeError(f"etcd not found{f' at {etcd_bin}' if etcd_bin else ' in PATH'}: a cluster server "
                               "runs an etcd member; install it (apt-get install etcd-server) or pass -etcd-bin PATH")
        self.scheme = "https" if tls is not None else "http"
        self.client_port = 0
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.on_restart: list[object] = []
        self.on_removed: Callable[[], None] | None = None
        self._initial: tuple[str, str, str] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self.exited = asyncio.Event()
        self.removed = False

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://{_host(self.advertise)}:{self.peer_port}"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    def has_data(self) -> bool:
        return os.path.isdir(os.path.join(self.dir, "member", "wal"))

    def argv(self) -> list[str]:
        listen_peer = f"{self.scheme}://{_host(self.bind)}:{self.peer_port}"
        args = [self.bin, "--name", self.name, "--data-dir", self.dir,
                "--listen-peer-urls", listen_peer, "--initial-advertise-peer-urls", self.peer_url,
                "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
                "--snapshot-count", "10000", "--logger", "zap", "--log-level", "warn",
                "--auto-compaction-retention", "0"]
        if self._initial is not None and not self.has_data():
            cluster, state, token = self._initial
            args += ["--initial-cluster", cluster, "--initial-cluster-state", state,
                     "--initial-cluster-token", token]
        if self.tls is not None:
            t = self.tls
            args += ["--cert-file", t.cert, "--key-file", t.key, "--trusted-ca-file", t.ca, "--client-cert-auth",
                     "--peer-cert-file", t.cert, "--peer-key-file", t.key, "--peer-trusted-ca-file", t.ca,
                     "--peer-client-cert-auth"]
        return args

    async def start(self, initial_cluster: str = "", state: str = "new", token: str = "") -> None:
        """Start etcd: with existing data as it is, otherwise with the given initial cluster."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        if initial_cluster:
            self._initial = (initial_cluster, state, token)
        await self._spawn()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(), name="etcd-supervisor")

    async def _spawn(self) -> None:
        self.client_port = _free_loopback_port()
        logf = open(os.path.join(os.path.dirname(self.dir), "etcd.log"), "ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv(), stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, preexec_fn=_die_with_parent)
        finally:
            logf.close()
        self.exited.clear()
        log.info("etcd member %s started (pid %d, peer %s, client %s)", self.name, self.proc.pid,
                 self.peer_url, self.client_url)

    async def _supervise(self) -> None:
        backoff = 0.5
        while not self._stopping:
            assert self.proc is not None
            rc = await self.proc.wait()
            self.exited.set()
            if self._stopping:
                return
            tail = self.log_tail()
            if "has already been removed" in tail or "the member has been permanently removed" in tail:
                self.removed = True
                log.error("etcd member %s was removed from the cluster; not restarting it", self.name)
                if self.on_removed is not None:
                    self.on_removed()
                return
            log.error("etcd exited with %s; restarting it in %.1fs. Last log: %s", rc, backoff, tail[-400:])
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            if self._stopping:
                return
            await self._spawn()
            self.restarts += 1
            for cb in self.on_restart:
                cb()  # type: ignore[operator]
            if await self._wait_running(5.0):
                backoff = 0.5

    async def _wait_running(self, seconds: float) -> bool:
        assert self.proc is not None
        try:
            await asyncio.wait_for(self.proc.wait(), seconds)
            return False
        except TimeoutError:
            return True

    def log_tail(self, n: int = 4000) -> str:
        try:
            with open(os.path.join(os.path.dirname(self.dir), "etcd.log"), "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - n))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    async def stop(self) -> None:
        self._stopping = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._supervisor is not None:
            self._supervisor.cancel()
            try:
                await self._supervisor
            except (asyncio.CancelledError, Exception):
                pass
            self._supervisor = None
