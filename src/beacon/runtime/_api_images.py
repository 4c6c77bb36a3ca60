"""Image, volume and network endpoints of the Docker Engine API (the container ones are in ``_api``).

The image store blocks (tar, disk), so every store call runs in a thread; progress is streamed as the
newline-delimited JSON messages the docker CLI prints.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from beacon.runtime._errors import EngineError, InvalidParameter, NotFound, NotImplementedByEngine
from beacon.runtime._http import Request, Response, Stream
from beacon.runtime._images import normalize, split_ref
from beacon.runtime._model import optional_str, str_labels

if TYPE_CHECKING:
    from beacon.runtime._api import ApiServer
    from beacon.runtime._engine import Engine

TAR = "application/x-tar"


def routes(api: ApiServer) -> list[tuple[str, str, Any]]:
    h = ImageHandlers(api.engine)
    return [
        ("GET", r"/images/json", h.list), ("POST", r"/images/create", h.create),
        ("POST", r"/images/load", h.load), ("GET", r"/images/get", h.save_many),
        ("POST", r"/images/prune", h.prune),
        ("GET", r"/images/(?P<id>.+)/json", h.inspect), ("GET", r"/images/(?P<id>.+)/get", h.save_one),
        ("POST", r"/images/(?P<id>.+)/tag", h.tag), ("POST", r"/images/(?P<id>.+)/push", h.push),
        ("GET", r"/images/(?P<id>.+)/history", h.history),
        ("DELETE", r"/images/(?P<id>.+)", h.remove),
        ("POST", r"/auth", h.auth), ("POST", r"/build", h.build), ("POST", r"/build/prune", h.build_prune),
        ("GET", r"/volumes", h.volumes), ("POST", r"/volumes/create", h.volume_create),
        ("POST", r"/volumes/prune", h.volume_prune),
        ("GET", r"/volumes/(?P<id>[^/]+)", h.volume_inspect), ("DELETE", r"/volumes/(?P<id>[^/]+)", h.volume_rm),
    ]


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\r\n"


def progress(work: Callable[[Callable[[dict[str, Any]], None]], Any]) -> Stream:
    """Run ``work(emit)`` in a thread, streaming what it emits; an error ends the stream with the
    ``errorDetail`` message the CLI shows (headers are already sent by then)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def emit(obj: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, obj)

    def run() -> None:
        try:
            work(emit)
        except EngineError as exc:
            emit({"errorDetail": {"message": exc.message}, "error": exc.message})
        except Exception as exc:  # a bug or I/O error: report it to the client, keep serving
            emit({"errorDetail": {"message": str(exc)}, "error": str(exc)})
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    thread = threading.Thread(target=run, name="beacon-images", daemon=True)
    thread.start()

    async def body() -> AsyncIterator[bytes]:
        while (item := await queue.get()) is not None:
            yield _line(item)

    return Stream(body())


def registry_auth(req: Request) -> tuple[str, str]:
    raw = req.headers.get("x-registry-auth", "")
    if not raw:
        return "", ""
    try:
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except ValueError:
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    return str(data.get("username") or ""), str(data.get("password") or "")


class ImageHandlers:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.store = engine.images

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def list(self, req: Request, args: dict[str, str]) -> Response:
        from beacon.runtime._api import parse_filters

        filters = parse_filters(req.q("filters"))
        used = self.engine.images_in_use()
        hidden = self.store.intermediates()
        out = []
        for image_id in sorted(self.store.ids()):
            summary = self.store.summary(image_id, len(used.get(image_id, [])))
            dangling = not summary["RepoTags"]
            if "dangling" in filters and (filters["dangling"][0] in ("true", "1")) != dangling:
                continue
            if dangling and not req.flag("all") and image_id in hidden:
                continue
            if "reference" in filters and not any(
                    _ref_match(t, pat) for t in summary["RepoTags"] for pat in filters["reference"]):
                continue
            if "label" in filters and not all(_label_match(summary["Labels"], f) for f in filters["label"]):
                continue
            out.append(summary)
        out.sort(key=lambda s: s["Created"], reverse=True)
        return Response(200, out)

    async def inspect(self, req: Request, args: dict[str, str]) -> Response:
        image_id = self.store.resolve(args["id"])
        return Response(200, await self._run(self.store.inspect, image_id))

    async def history(self, req: Request, args: dict[str, str]) -> Response:
        image_id = self.store.resolve(args["id"])
        cfg = self.store.config(image_id)
        rows = []
        for entry in reversed(cfg.get("history") or []):
            rows.append({"Id": "<missing>", "Created": 0, "CreatedBy": entry.get("created_by", ""),
                         "Tags": None, "Size": 0, "Comment": entry.get("comment", "")})
        if rows:
            rows[0]["Id"], rows[0]["Tags"] = image_id, self.store.repo_tags(image_id)
        return Response(200, rows)

    async def create(self, req: Request, args: dict[str, str]) -> Stream:
        src = req.q("fromSrc")
        if src is not None:
            if src != "-":
                raise InvalidParameter("beacon engine imports only from the request body (fromSrc=-)")
            repo, tag = req.q("repo") or "", req.q("tag") or ""
            ref = f"{repo}:{tag}" if repo and tag else repo
            body = io.BytesIO(req.body)

            def do_import(emit: Callable[[dict[str, Any]], None]) -> None:
                image_id = self.store.import_tar(body, ref, req.query.get("changes", []), req.q("message") or "")
                emit({"status": image_id})

            return progress(do_import)
        image = req.q("fromImage")
        if not image:
            raise InvalidParameter("fromImage or fromSrc is required")
        name, tag, digest = split_ref(image)
        tag = req.q("tag") or tag
        if tag.startswith("sha256:"):
            digest, tag = tag, ""
        ref = f"{name}@{digest}" if digest else f"{name}:{tag or 'latest'}"
        from beacon.runtime._registry import HUB, pull, split_registry

        if split_registry(name)[0] == HUB:
            # Never reach out to the internet on an unqualified name (a typo in a test would).
            raise NotImplementedByEngine(
                f"pull access denied for {name}: beacon engine has no default registry (Docker Hub is not "
                f"used); name the registry (127.0.0.1:5000/{name}) or `docker load` the image")

        user, password = registry_auth(req)
        return progress(lambda emit: pull(self.store, ref, user, password, emit))

    async def push(self, req: Request, args: dict[str, str]) -> Stream:
        name = args["id"]
        tag = req.q("tag") or ""
        ref = normalize(f"{name}:{tag}" if tag else name)
        self.store.resolve(ref)
        from beacon.runtime._registry import push

        user, password = registry_auth(req)
        return progress(lambda emit: push(self.store, ref, user, password, emit))

    async def load(self, req: Request, args: dict[str, str]) -> Stream:
        body = io.BytesIO(req.body)

        def do_load(emit: Callable[[dict[str, Any]], None]) -> None:
            for line in self.store.load(body):
                emit({"stream": line + "\n"})

        return progress(do_load)

    async def _save(self, names: list[str]) -> Stream:
        for n in names:
            self.store.resolve(n)  # a 404 before any byte is sent
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=16)
        gone = threading.Event()  # the client went away: the writer thread must not block on a full queue

        class Pipe(io.RawIOBase):
            def writable(self) -> bool:
                return True

            def write(self, data: Any) -> int:
                if gone.is_set():
                    raise BrokenPipeError("client went away")
                chunk = bytes(data)
                asyncio.run_coroutine_threadsafe(queue.put(chunk), loop).result()
                return len(chunk)

        def run() -> None:
            try:
                self.store.save(names, Pipe())
            except Exception:  # noqa: BLE001 - the client sees a truncated tar, as with dockerd
                pass
            finally:
                asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()

        threading.Thread(target=run, daemon=True).start()

        async def body() -> AsyncIterator[bytes]:
            try:
                while (chunk := await queue.get()) is not None:
                    yield chunk
            finally:
                gone.set()
                while not queue.empty():  # unblock a put in flight; the next write then fails
                    queue.get_nowait()

        return Stream(body(), content_type=TAR)

    async def save_many(self, req: Request, args: dict[str, str]) -> Stream:
        names = req.query.get("names", [])
        if not names:
            raise InvalidParameter("no image names given")
        return await self._save(names)

    async def save_one(self, req: Request, args: dict[str, str]) -> Stream:
        return await self._save([args["id"]])

    async def tag(self, req: Request, args: dict[str, str]) -> Response:
        repo = req.q("repo") or ""
        if not repo:
            raise InvalidParameter("repository name must have at least one component")
        self.store.tag(args["id"], repo, req.q("tag") or "")
        image_id = self.store.resolve(args["id"])
        self.engine.events.emit("image", "tag", image_id, {"name": normalize(f"{repo}:{req.q('tag')}"
                                                                           if req.q("tag") else repo)})
        return Response(201, None)

    async def remove(self, req: Request, args: dict[str, str]) -> Response:
        out = await self._run(self.store.remove, args["id"], req.flag("force"), self.engine.images_in_use())
        for item in out:
            for action, ref in item.items():
                self.engine.events.emit("image", "untag" if action == "Untagged" else "delete", ref, {"name": ref})
        return Response(200, out)

    async def prune(self, req: Request, args: dict[str, str]) -> Response:
        from beacon.runtime._api import parse_filters

        filters = parse_filters(req.q("filters"))
        for key in filters:
            if key not in ("dangling", "label"):
                raise InvalidParameter(f"invalid filter '{key}' (beacon prunes images by dangling and label)")
        all_unused = filters.get("dangling", ["true"])[0] in ("false", "0")
        labels = filters.get("label", [])

        def wanted(image_id: str) -> bool:
            have = (self.store.config(image_id).get("config") or {}).get("Labels") or {}
            return all(_label_match(have, f) for f in labels)

        deleted, reclaimed = await self._run(self.store.prune, all_unused, self.engine.images_in_use(), wanted)
        return Response(200, {"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed})

    async def auth(self, req: Request, args: dict[str, str]) -> Response:
        from beacon.runtime._registry import login

        body = req.json(default={}) or {}
        if not isinstance(body, dict):
            raise InvalidParameter("invalid JSON: auth config must be an object")
        await self._run(login, str(body.get("serveraddress") or ""), str(body.get("username") or ""),
                        str(body.get("password") or ""))
        return Response(200, {"Status": "Login Succeeded", "IdentityToken": ""})

    async def build(self, req: Request, args: dict[str, str]) -> Stream:
        from beacon.runtime._build import build_from_request

        if self.engine.isolation != "runc":
            raise NotImplementedByEngine(f"build needs runc isolation (this engine runs {self.engine.isolation})")
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        async def run() -> None:
            try:
                await build_from_request(self.engine, req.body, req.query, queue.put_nowait)
            except EngineError as exc:
                queue.put_nowait({"errorDetail": {"message": exc.message}, "error": exc.message})
            except Exception as exc:  # a bug: tell the client, keep serving
                queue.put_nowait({"errorDetail": {"message": str(exc)}, "error": str(exc)})
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(run())

        async def body() -> AsyncIterator[bytes]:
            try:
                while (item := await queue.get()) is not None:
                    yield _line(item)
            finally:
                await task  # a client that went away does not leave a half-built step behind

        return Stream(body())

    async def build_prune(self, req: Request, args: dict[str, str]) -> Response:
        (self.store.root / "build-cache.json").unlink(missing_ok=True)
        return Response(200, {"CachesDeleted": [], "SpaceReclaimed": 0})

    # -- volumes -------------------------------------------------------------------------------

    def _volume_users(self, name: str) -> list[str]:
        return [c.id for c in self.engine.containers() if name in self.engine.volumes.names_used(c)]

    async def volumes(self, req: Request, args: dict[str, str]) -> Response:
        return Response(200, {"Volumes": self.engine.volumes.list(), "Warnings": None})

    async def volume_create(self, req: Request, args: dict[str, str]) -> Response:
        body = req.json(default={}) or {}
        if not isinstance(body, dict):
            raise InvalidParameter("invalid JSON: volume config must be an object")
        info = self.engine.volumes.create(optional_str(body, "Name"), str_labels(body),
                                          optional_str(body, "Driver", "local"))
        self.engine.events.emit("volume", "create", info["Name"], {"driver": "local"})
        return Response(201, info)

    async def volume_inspect(self, req: Request, args: dict[str, str]) -> Response:
        return Response(200, self.engine.volumes.inspect(args["id"]))

    async def volume_rm(self, req: Request, args: dict[str, str]) -> Response:
        self.engine.volumes.remove(args["id"], self._volume_users(args["id"]), req.flag("force"))
        self.engine.events.emit("volume", "destroy", args["id"], {"driver": "local"})
        return Response(204)

    async def volume_prune(self, req: Request, args: dict[str, str]) -> Response:
        deleted = []
        for v in self.engine.volumes.list():
            if not self._volume_users(v["Name"]) and (req.flag("all") or len(v["Name"]) == 64):
                try:
                    self.engine.volumes.remove(v["Name"], [])
                    deleted.append(v["Name"])
                except (NotFound, OSError):
                    continue
        return Response(200, {"VolumesDeleted": deleted, "SpaceReclaimed": 0})


def _ref_match(tag: str, pattern: str) -> bool:
    import fnmatch

    name = tag.rsplit(":", 1)[0]
    return fnmatch.fnmatch(tag, pattern) or fnmatch.fnmatch(name, pattern)


def _label_match(labels: dict[str, str], flt: str) -> bool:
    key, sep, value = flt.partition("=")
    return key in labels and (not sep or labels[key] == value)

