"""/v1/session/*: create, destroy, renew, info, node, list."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from beacon.agent.http.core import HTTPError, Reply, Router, blocking_query, query_options, read_json
from beacon.agent.http.decode import DecodeError, Fields
from beacon.agent.http.encode import session_json
from beacon.durations import format_duration, parse_duration
from beacon.endpoints import session as session_endpoint
from beacon.model import SERF_CHECK_ID, Session
from beacon.numbers import INT64_MAX, INT64_MIN

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

router = Router()

SESSION_TTL_MAX = 86400.0
MAX_LOCK_DELAY = 60.0
DEFAULT_LOCK_DELAY = 15.0


def _lock_delay(value: Any) -> float:
    """Consul's rule: a string is a duration; a number is nanoseconds; anything under 1000 (ns) is
    taken as seconds instead, so `15` and `"15s"` and `15000000000` all mean 15 s."""
    try:
        if isinstance(value, str):
            ns = parse_duration(value) * 1e9
        elif isinstance(value, int | float) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX:
            ns = float(value)  # a Go time.Duration: outside int64 the request does not decode
        else:
            raise ValueError(value)
    except ValueError:
        raise DecodeError(f"Request decode failed: invalid LockDelay {value!r}") from None
    if ns < 1000:
        ns *= 1e9
    return max(0.0, ns / 1e9)  # a negative delay delays nothing


def decode_session(obj: Any, agent: Agent) -> Session:
    f = Fields(obj if obj is not None else {})
    lock_delay = DEFAULT_LOCK_DELAY if f.get("LockDelay") is None else _lock_delay(f.get("LockDelay"))
    if lock_delay > MAX_LOCK_DELAY:
        raise HTTPError(500, f"Lock Delay must be <= {format_duration(MAX_LOCK_DELAY)}")
    if f.has("NodeChecks"):
        node_checks = f.str_list("NodeChecks")
    elif f.has("Checks"):
        node_checks = f.str_list("Checks")
    else:
        node_checks = [SERF_CHECK_ID]
    service_checks = []
    raw = f.get("ServiceChecks")
    if raw is not None:
        if not isinstance(raw, list):
            raise DecodeError("Request decode failed: ServiceChecks must be a list")
        for item in raw:
            sf = Fields(item, "ServiceChecks")
            service_checks.append({"ID": sf.str("ID"), "Namespace": sf.str("Namespace")})
    behavior = f.str("Behavior") or "release"
    if behavior not in ("release", "delete"):
        raise HTTPError(500, f"Invalid Behavior setting '{behavior}'")
    ttl = ""
    raw_ttl = f.get("TTL")
    if raw_ttl not in (None, ""):
        try:
            seconds = parse_duration(raw_ttl)
        except ValueError as exc:
            raise HTTPError(400, f"Request decode failed: TTL: {exc}") from None
        ttl_min = agent.config.session_ttl_min
        if seconds != 0 and not ttl_min <= seconds <= SESSION_TTL_MAX:
            raise HTTPError(500, f"Invalid Session TTL '{int(seconds * 1e9)}', must be between "
                                 f"[{format_duration(ttl_min)}={format_duration(SESSION_TTL_MAX)}]")
        if seconds:
            ttl = raw_ttl if isinstance(raw_ttl, str) else format_duration(seconds)
    return Session(
        id=str(uuid.uuid4()), node=f.str("Node") or agent.config.node_name, name=f.str("Name"),
        lock_delay_ns=int(round(lock_delay * 1e9)), behavior=behavior, ttl=ttl, node_checks=node_checks,
        service_checks=service_checks,
    )


def _session_id(req: web.Request) -> str:
    sid = req.match_info.get("id", "")
    if not sid:
        raise HTTPError(400, "Missing session")
    return sid


async def session_create(req: web.Request, agent: Agent) -> Reply:
    query_options(req, agent)
    sess = decode_session(await read_json(req, required=False), agent)
    sid = await session_endpoint.create(agent.submit, sess, time.time())
    reaper = getattr(agent, "session_reaper", None)
    if reaper is not None and sess.ttl:
        reaper.kick()
    return Reply({"ID": sid})


async def session_destroy(req: web.Request, agent: Agent) -> Reply:
    query_options(req, agent)
    sid = _session_id(req)
    try:
        uuid.UUID(sid)
    except ValueError:
        raise HTTPError(500, f"Invalid session ID \"{sid}\": not a UUID") from None
    await session_endpoint.destroy(agent.submit, sid, time.time())
    return Reply(True)


async def session_renew(req: web.Request, agent: Agent) -> Reply:
    query_options(req, agent)
    sid = _session_id(req)
    result = await session_endpoint.renew(agent.submit, sid, time.time())
    return Reply([session_json(result.value)], index=result.index)


async def session_info(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    sid = _session_id(req)
    store = agent.store

    def read() -> tuple[int, list[Session]]:
        with store.lock:
            sess = store.sessions.get(sid)
            if sess is None:
                return store.tables["sessions"], []
            return sess.modify_index, [sess]

    idx, found = await blocking_query(agent, opts, ["session:" + sid], read)
    return Reply([session_json(s) for s in found], index=idx)


async def session_node(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    node = req.match_info.get("node", "")
    if not node:
        raise HTTPError(400, "Missing node name")
    store = agent.store

    def read() -> tuple[int, list[Session]]:
        with store.lock:
            rows = [s for s in store.sessions.values() if s.node.lower() == node.lower()]
            return store.tables["sessions"], sorted(rows, key=lambda s: s.create_index)

    idx, found = await blocking_query(agent, opts, ["sessions"], read)
    return Reply([session_json(s) for s in found], index=idx)


async def session_list(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    store = agent.store

    def read() -> tuple[int, list[Session]]:
        with store.lock:
            return store.tables["sessions"], sorted(store.sessions.values(), key=lambda s: s.create_index)

    idx, found = await blocking_query(agent, opts, ["sessions"], read)
    return Reply([session_json(s) for s in found], index=idx)


router.add("PUT", "/v1/session/create", session_create)
router.add("PUT", "/v1/session/destroy/{id}", session_destroy)
router.add("PUT", "/v1/session/destroy/", session_destroy)
router.add("PUT", "/v1/session/renew/{id}", session_renew)
router.add("PUT", "/v1/session/renew/", session_renew)
router.add("GET", "/v1/session/info/{id}", session_info)
router.add("GET", "/v1/session/info/", session_info)
router.add("GET", "/v1/session/node/{node}", session_node)
router.add("GET", "/v1/session/node/", session_node)
router.add("GET", "/v1/session/list", session_list)
