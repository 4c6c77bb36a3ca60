"""/v1/event/fire/:name and /v1/event/list: user events, best-effort as in Consul.

Consul carries user events on gossip: not in the replicated state, not persisted, no total order. An
agent keeps the last 256 it has seen. An event fired on any agent is a Serf user event
``consul:event:<name>`` on the LAN pool, so it reaches every agent of the datacenter, each of which
applies the node/service/tag filters to itself (-dev without serf keeps it local). The list's
X-Consul-Index is derived from the newest matching event's ID, so it is opaque and not monotonic: a
blocking list waits while the index *equals* the one given, exactly as Consul's does.
"""

from __future__ import annotations

import asyncio
import base64
import random
import re
import uuid
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from beacon.agent.http.core import HTTPError, Reply, Router, query_options

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

router = Router()
EVENT_BUFFER_SIZE = 256
# Consul's limit on a user event's size (name + payload + filters), set by its gossip message size.
USER_EVENT_SIZE_LIMIT = 512


@dataclass(slots=True)
class UserEvent:
    id: str
    name: str
    payload: bytes | None
    node_filter: str = ""
    service_filter: str = ""
    tag_filter: str = ""
    version: int = 1
    ltime: int = 0

    def to_gossip(self) -> dict[str, Any]:
        return {"ID": self.id, "Name": self.name, "Payload": self.payload, "NodeFilter": self.node_filter,
                "ServiceFilter": self.service_filter, "TagFilter": self.tag_filter, "Version": self.version}

    def to_json(self) -> dict[str, Any]:
        return {"ID": self.id, "Name": self.name,
                "Payload": None if self.payload is None else base64.b64encode(self.payload).decode(),
                "NodeFilter": self.node_filter, "ServiceFilter": self.service_filter,
                "TagFilter": self.tag_filter, "Version": self.version, "LTime": self.ltime}


def uuid_to_index(event_id: str) -> int:
    """Consul's uuidToUint64: the UUID's two 64-bit halves XORed."""
    raw = uuid.UUID(event_id).int
    return ((raw >> 64) ^ raw) & (2**64 - 1)


class EventBuffer:
    """The agent's ring of recent events, and a notification for blocking lists."""

    def __init__(self, size: int = EVENT_BUFFER_SIZE) -> None:
        self.events: deque[UserEvent] = deque(maxlen=size)
        self.ltime = 0
        self._changed = asyncio.Event()

    def add(self, event: UserEvent) -> None:
        self.ltime = max(self.ltime, event.ltime) + 1
        event.ltime = self.ltime
        self.events.append(event)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass


def _buffer(agent: Agent) -> EventBuffer:
    buf = getattr(agent, "events", None)
    if buf is None:
        buf = EventBuffer()
        agent.events = buf  # type: ignore[attr-defined]
    return buf


def _regex(req: web.Request, name: str) -> str:
    value = req.query.get(name, "")
    if value:
        try:
            re.compile(value)
        except re.error as exc:
            raise HTTPError(400, f"Invalid {name} filter: {exc}") from None
    return value


def _matches_local(agent: Agent, ev: UserEvent) -> bool:
    """Would this agent accept the event, given its filters (Consul's shouldProcessUserEvent)?"""
    if ev.node_filter and not re.search(ev.node_filter, agent.config.node_name):
        return False
    if ev.service_filter:
        services = agent.local.live_services().values()
        matching = [s for s in services if re.search(ev.service_filter, s.service)]
        if not matching:
            return False
        if ev.tag_filter and not any(re.search(ev.tag_filter, t) for s in matching for t in s.tags):
            return False
    return True


async def event_fire(req: web.Request, agent: Agent) -> Reply:
    query_options(req, agent)
    name = req.match_info.get("name", "")
    if not name:
        raise HTTPError(400, "Missing name")
    payload = await req.read()
    ev = UserEvent(id=str(uuid.UUID(int=random.getrandbits(128), version=4)), name=name,
                   payload=payload or None, node_filter=_regex(req, "node"),
                   service_filter=_regex(req, "service"), tag_filter=_regex(req, "tag"))
    if ev.tag_filter and not ev.service_filter:
        raise HTTPError(500, "Cannot provide tag filter without service filter")
    size = len(name) + len(payload) + len(ev.node_filter) + len(ev.service_filter) + len(ev.tag_filter)
    if size > USER_EVENT_SIZE_LIMIT:
        raise HTTPError(500, f"UserEvent exceeds the size limit: {size} > {USER_EVENT_SIZE_LIMIT} bytes")
    lan = agent.cluster.lan if agent.cluster is not None else None
    if lan is None:  # -dev without serf: this agent is the whole datacenter
        buf = _buffer(agent)
        if _matches_local(agent, ev):
            buf.add(ev)
        else:
            buf.ltime += 1
            ev.ltime = buf.ltime
        return Reply(ev.to_json())
    from beacon.gossip import SerfError
    from beacon.gossip.events import encode_user_event

    serf_name, body = encode_user_event(ev.to_gossip())
    try:
        # Serf delivers it to every member, this agent included (receive_gossip_event files it).
        await lan.fire(serf_name, body)
    except SerfError as exc:
        raise HTTPError(500, f"Failed to fire event: {exc}") from None
    return Reply(ev.to_json())


def receive_gossip_event(agent: Agent, serf_event: Any) -> None:
    """A Serf user event arrived: keep it when it is a Consul event whose filters match this agent."""
    from beacon.gossip.events import decode_user_event

    d = decode_user_event(serf_event.name, serf_event.payload, serf_event.ltime)
    if d is None:
        return
    ev = UserEvent(id=d["ID"], name=d["Name"], payload=d["Payload"], node_filter=d["NodeFilter"],
                   service_filter=d["ServiceFilter"], tag_filter=d["TagFilter"], version=d["Version"],
                   ltime=d["LTime"])
    try:
        uuid.UUID(ev.id)
        matches = _matches_local(agent, ev)
    except (ValueError, re.error):  # a malformed ID or filter from a peer: drop the event
        return
    if matches:
        _buffer(agent).add(ev)


async def event_list(req: web.Request, agent: Agent) -> Reply:
    opts = query_options(req, agent)
    name = req.query.get("name", "")
    node_re, svc_re, tag_re = _regex(req, "node"), _regex(req, "service"), _regex(req, "tag")
    buf = _buffer(agent)

    def read() -> tuple[int, list[UserEvent]]:
        out = [e for e in buf.events if (not name or e.name == name)
               and (not node_re or re.search(node_re, e.node_filter))
               and (not svc_re or re.search(svc_re, e.service_filter))
               and (not tag_re or re.search(tag_re, e.tag_filter))]
        return (uuid_to_index(out[-1].id) if out else 1), out

    idx, events = read()
    if opts.index and idx == opts.index:
        cfg = agent.config
        wait = min(opts.wait or cfg.default_query_time, cfg.max_query_time)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait + random.random() * wait / 16
        while idx == opts.index:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await buf.wait(remaining)
            idx, events = read()
    return Reply([e.to_json() for e in events], index=idx)


router.add("PUT", "/v1/event/fire/{name}", event_fire)
router.add("PUT", "/v1/event/fire/", event_fire)
router.add("GET", "/v1/event/list", event_list)
