"""``docker pull`` and ``docker push`` against a registry speaking the distribution v2 API.

Blocking (urllib), run in a thread by the API. Loopback registries are spoken to over plain HTTP,
as dockerd treats them as insecure by default; every other one over HTTPS. Authentication: HTTP
Basic when the registry asks for it, or the token flow (``WWW-Authenticate: Bearer realm=...``)
with the same credentials, as ``docker login`` stores them (sent in ``X-Registry-Auth``).

Pushed images use the OCI manifest with uncompressed layers (``application/vnd.oci.image.layer.v1.tar``),
so a layer's digest is its diff ID and nothing is recompressed; pulls accept Docker schema 2 and OCI
manifests, manifest lists and indexes (the linux/amd64 entry), gzip or plain layers.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import IO, Any

from beacon.runtime._errors import (
    EngineError,
    InvalidParameter,
    NotFound,
    NotImplementedByEngine,
    Unauthorized,
)
from beacon.runtime._images import ImageStore, arch, normalize, split_ref

MANIFEST_TYPES = ",".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
HUB = "registry-1.docker.io"
TIMEOUT = 60.0

Emit = Callable[[dict[str, Any]], None]


def split_registry(name: str) -> tuple[str, str]:
    """``127.0.0.1:5000/app`` -> (``127.0.0.1:5000``, ``app``); ``busybox`` -> (Hub, ``library/busybox``)."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return HUB, name if sep else f"library/{name}"


def _is_loopback(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0].strip("[]") if not registry.startswith("[") else registry[1:].split("]")[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Hashing:
    """Reads through ``inner`` and hashes what passes (to check a blob's digest as it streams)."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner, self.h = inner, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.h.update(data)
        return data

    def digest(self) -> str:
        while self.read(1 << 20):
            pass
        return "sha256:" + self.h.hexdigest()


class Registry:
    def __init__(self, registry: str, repo: str, user: str, password: str) -> None:
        self.base = ("http://" if _is_loopback(registry) else "https://") + registry
        self.repo, self.user, self.password = repo, user, password
        self.auth = ""

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                ok: tuple[int, ...] = (200,)) -> Any:
        url = path if path.startswith("http") else self.base + path
        for attempt in range(2):
            req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
            if self.auth:
                req.add_header("Authorization", self.auth)
            try:
                resp = urllib.request.urlopen(req, timeout=TIMEOUT)  # noqa: S310 - http(s) only, built above
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and attempt == 0 and self._login(exc.headers.get("WWW-Authenticate", "")):
                    continue
                if exc.code in ok:
                    return exc
                detail = exc.read(4096).decode(errors="replace")
                if exc.code == 401:
                    raise Unauthorized(f"unauthorized: authentication required ({self.base})") from None
                if exc.code == 404:
                    raise NotFound(f"manifest unknown: {detail.strip() or url}") from None
                raise EngineError(f"registry answered {exc.code} for {method} {url}: {detail.strip()}") from None
            except (urllib.error.URLError, OSError) as exc:
                raise EngineError(f"Get \"{url}\": {getattr(exc, 'reason', exc)}") from None
            return resp
        raise EngineError("unauthorized")

    def _login(self, challenge: str) -> bool:
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic":
            if not self.user:
                return False
            self.auth = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            return True
        if scheme.lower() != "bearer":
            return False
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        realm = fields.pop("realm", "")
        if not realm:
            return False
        query = urllib.parse.urlencode({k: v for k, v in fields.items() if k in ("service", "scope")})
        req = urllib.request.Request(f"{realm}?{query}")
        if self.user:
            req.add_header("Authorization",
                           "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:  # noqa: S310
                data = json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError):
            return False
        token = data.get("token") or data.get("access_token")
        if not token:
            return False
        self.auth = f"Bearer {token}"
        return True

    def manifest(self, ref: str) -> tuple[dict[str, Any], str, bytes]:
        with self.request("GET", f"/v2/{self.repo}/manifests/{ref}", headers={"Accept": MANIFEST_TYPES}) as resp:
            raw = resp.read()
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        try:
            return json.loads(raw), digest, raw
        except ValueError as exc:
            raise EngineError(f"registry sent an unreadable manifest: {exc}") from exc

    def blob(self, digest: str) -> Any:
        return self.request("GET", f"/v2/{self.repo}/blobs/{digest}")

    def has_blob(self, digest: str) -> bool:
        resp = self.request("HEAD", f"/v2/{self.repo}/blobs/{digest}", ok=(200, 404))
        return resp.status == 200 if hasattr(resp, "status") else resp.code == 200

    def upload(self, digest: str, body: Any, size: int) -> None:
        resp = self.request("POST", f"/v2/{self.repo}/blobs/uploads/", ok=(202,))
        location = urllib.parse.urljoin(self.base + "/", resp.headers["Location"])
        sep = "&" if "?" in location else "?"
        self.request("PUT", f"{location}{sep}digest={digest}", body=body,
                     headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                     ok=(201,))


def pull(store: ImageStore, ref: str, user: str, password: str, emit: Emit) -> None:
    name, tag, digest = split_ref(ref)
    registry, repo = split_registry(name)
    reg = Registry(registry, repo, user, password)
    emit({"status": f"Pulling from {repo}", "id": tag or digest})
    manifest, mdigest, _ = reg.manifest(digest or tag or "latest")
    if "manifests" in manifest:  # a list or index: take this platform's entry
        wanted = [m for m in manifest["manifests"] if (m.get("platform") or {}).get("os") == "linux" and
                  (m.get("platform") or {}).get("architecture") == arch()]
        if not wanted:
            raise NotFound(f"no matching manifest for linux/{arch()} in the manifest list entries")
        manifest, mdigest, _ = reg.manifest(wanted[0]["digest"])
    if manifest.get("schemaVersion") != 2 or "config" not in manifest:
        raise InvalidParameter("unsupported manifest (want Docker schema 2 or OCI)")
    with reg.blob(manifest["config"]["digest"]) as resp:
        config_bytes = resp.read()
    if "sha256:" + hashlib.sha256(config_bytes).hexdigest() != manifest["config"]["digest"]:
        raise EngineError("image config digest mismatch")
    config = json.loads(config_bytes)
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    layers = manifest.get("layers") or []
    if len(diff_ids) != len(layers):
        raise EngineError("manifest and image config disagree on the number of layers")
    for layer, diff_id in zip(layers, diff_ids, strict=True):
        short = layer["digest"][7:19]
        if (store.layers / diff_id.removeprefix("sha256:")).is_dir():
            emit({"status": "Already exists", "progressDetail": {}, "id": short})
            continue
        emit({"status": "Pulling fs layer", "progressDetail": {}, "id": short})
        with reg.blob(layer["digest"]) as resp:
            hashing = _Hashing(resp)
            store.add_layer(hashing, diff_id)  # type: ignore[arg-type]
            if hashing.digest() != layer["digest"]:
                raise EngineError(f"layer {layer['digest']} failed its digest check")
        emit({"status": "Pull complete", "progressDetail": {}, "id": short})
    tags = [f"{name}:{tag}"] if tag and not digest else []
    store.add_config_bytes(config_bytes, tags, digest_ref=f"{name}@{mdigest}")
    emit({"status": f"Digest: {mdigest}"})
    emit({"status": f"Status: Downloaded newer image for {name}:{tag}" if tags else
          f"Status: Downloaded newer image for {name}@{mdigest}"})


def push(store: ImageStore, ref: str, user: str, password: str, emit: Emit) -> None:
    key = normalize(ref)
    name, _, tag = key.rpartition(":")
    registry, repo = split_registry(name)
    reg = Registry(registry, repo, user, password)
    image_id = store.resolve(key)
    emit({"status": f"The push refers to repository [{registry}/{repo}]"})
    layers = []
    for diff_id in store.diff_ids(image_id):
        path = store.blob_path(diff_id)
        size = path.stat().st_size
        layers.append({"mediaType": OCI_LAYER, "digest": diff_id, "size": size})
        short = diff_id[7:19]
        if reg.has_blob(diff_id):
            emit({"status": "Layer already exists", "progressDetail": {}, "id": short})
            continue
        emit({"status": "Preparing", "progressDetail": {}, "id": short})
        with open(path, "rb") as f:
            reg.upload(diff_id, f, size)
        emit({"status": "Pushed", "progressDetail": {}, "id": short})
    config_bytes = store.blob_path(image_id).read_bytes()
    if not reg.has_blob(image_id):
        reg.upload(image_id, config_bytes, len(config_bytes))
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": image_id, "size": len(config_bytes)},
                           "layers": layers}, separators=(",", ":")).encode()
    reg.request("PUT", f"/v2/{repo}/manifests/{tag}", body=manifest,
                headers={"Content-Type": OCI_MANIFEST}, ok=(201,))
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    store.add_config_bytes(config_bytes, [], digest_ref=f"{name}@{digest}")
    emit({"status": f"{tag}: digest: {digest} size: {len(manifest)}"})
    emit({"progressDetail": {}, "aux": {"Tag": tag, "Digest": digest, "Size": len(manifest)}})


def login(server: str, user: str, password: str) -> None:
    """``docker login``: check the credentials against the registry's ``/v2/`` (raises when refused)."""
    registry = server.removeprefix("https://").removeprefix("http://").rstrip("/") or HUB
    if registry in (HUB, "index.docker.io", "docker.io") or registry.endswith("docker.io/v1"):
        raise NotImplementedByEngine("beacon engine does not log in to Docker Hub: it has no default registry")
    reg = Registry(registry, "", user, password)
    with reg.request("GET", "/v2/"):
        pass
