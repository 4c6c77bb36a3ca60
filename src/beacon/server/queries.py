"""Prepared queries: the replicated table, and how a query is found, rendered and executed.

A prepared query is stored as Consul's JSON shape (``ID``, ``Name``, ``Session``, ``Token``,
``Template``, ``Service``, ``DNS``, ``CreateIndex``, ``ModifyIndex``) in ``store.extra["queries"]``,
keyed by ID. Commands, all ``(MessageType.PREPARED_QUERY, {"op": ..., ...})``:

* ``set``    ``{"query": {...}}``: create or update; the proposer fills the ID (a UUID) and has
  validated the query (:func:`validate`). Apply checks what depends on replicated state, as Consul's
  state store does: the session exists, the name does not alias another query's name or ID, and
  there is at most one catch-all template.
* ``delete`` ``{"id": ...}``.

Lookup follows Consul's ``PreparedQueryResolve``: an ID; else an exact name; else the template with
the longest name prefix of the asked name (the catch-all template, empty name, matches every name).
A template's strings are interpolated with ``${name.full}``, ``${name.prefix}``, ``${name.suffix}``,
``${match(N)}`` (N-th group of ``Template.Regexp`` applied to the full name) and ``${agent.segment}``
(always ``""``: Beacon has no network segments).

Execution (:func:`execute`) mirrors Consul's: health filter (critical dropped, warning too with
``OnlyPassing``), ``NodeMeta``/``ServiceMeta``, ``Tags`` with ``!tag`` exclusions, then the order.
Beacon has no network coordinates yet, so ``Near`` (or ``?near=``) does not sort by round-trip
time: the named node (``_agent`` = the agent answering) goes first and the rest keep the catalog's
stable order; without ``Near`` the result is shuffled, as Consul does. Failover targets are
accepted and reported; with a single datacenter no other datacenter is ever tried, so
``Failovers`` is always 0 and ``Datacenter`` is the local one.
"""

from __future__ import annotations

import copy
import random
import re
import uuid
from collections.abc import Callable
from typing import Any

from beacon.durations import parse_duration
from beacon.errors import Failed
from beacon.model import HealthCheck, Node, Service
from beacon.server import commands as cmd
from beacon.server.fsm import StateStore

TABLE = "queries"
TEMPLATE_TYPE = "name_prefix_match"
_INTERP = re.compile(r"\$\{\s*([^}]*?)\s*\}")
_MATCH = re.compile(r"match\(\s*(\d+)\s*\)$")
_VARIABLES = ("name.full", "name.prefix", "name.suffix", "agent.segment")

Instance = tuple[Node, Service, list[HealthCheck]]


def rows(store: StateStore) -> dict[str, dict[str, Any]]:
    return store.extra.setdefault(TABLE, {})


def is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower() and len(value) == 36
    except ValueError:
        return False


# ---------------------------------------------------------------------- validation (proposer side)
def validate(query: dict[str, Any]) -> None:
    """Consul's ``parseQuery`` checks; raise Invalid/Failed with Consul's message."""
    tmpl = query["Template"]
    if tmpl["Type"] not in ("", TEMPLATE_TYPE):
        raise Failed(f"Bad Template.Type '{tmpl['Type']}'")
    regexp = None
    if tmpl["Regexp"]:
        try:
            regexp = re.compile(tmpl["Regexp"])
        except re.error as exc:
            raise Failed(f"Bad Regexp: {exc}") from None
    if tmpl["Type"]:
        # Consul compiles the template once at write time so a bad interpolation fails early.
        render(query, query["Name"], regexp=regexp)
    if not query["Service"]["Service"]:
        raise Failed("Must provide a Service name to query")
    ttl = query["DNS"]["TTL"]
    if ttl:
        try:
            seconds = parse_duration(ttl)
        except ValueError as exc:
            raise Failed(f"Bad DNS TTL '{ttl}': {exc}") from None
        if seconds < 0:
            raise Failed(f"DNS TTL '{ttl}', must be >=0")


# ---------------------------------------------------------------------- commands
class QueryCommands:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    def handlers(self) -> dict[type[Any], Any]:
        return {
            cmd.QuerySet: lambda idx, c: self.set(idx, dict(c.query)),
            cmd.QueryDelete: lambda idx, c: self.delete(idx, c.id),
        }

    def set(self, idx: int, query: dict[str, Any]) -> str:
        table = rows(self.store)
        qid = query["ID"]
        if not is_uuid(qid):
            raise Failed(f"Invalid query ID \"{qid}\"")
        session = query.get("Session") or ""
        if session and session not in self.store.sessions:
            raise Failed(f"invalid session \"{session}\"")
        # Queries whose session is gone are hidden from reads (see live()); drop them here so a
        # hidden one never holds on to its name. Every replica sees the same sessions.
        for orphan in [q["ID"] for q in table.values() if q.get("Session") and q["Session"] not in self.store.sessions]:
            del table[orphan]
        name = query.get("Name") or ""
        is_template = bool(query["Template"]["Type"])
        for other in table.values():
            if other["ID"] == qid:
                continue
            if name and other["Name"] == name:
                raise Failed(f"name '{name}' aliases an existing query name")
            if name and other["ID"] == name:
                raise Failed(f"name '{name}' aliases an existing query ID")
            if is_template and not name and other["Template"]["Type"] and not other["Name"]:
                raise Failed("a query template with an empty name already exists")
        old = table.get(qid)
        query["CreateIndex"] = old["CreateIndex"] if old else idx
        query["ModifyIndex"] = idx
        table[qid] = query
        self._bump(idx, qid)
        return qid

    def delete(self, idx: int, qid: str) -> bool:
        if rows(self.store).pop(qid, None) is None:
            return False
        self._bump(idx, qid)
        return True

    def _bump(self, idx: int, qid: str) -> None:
        self.store.bump_table(TABLE, idx)
        self.store.touch("query:" + qid)


def live(store: StateStore) -> list[dict[str, Any]]:
    """Every query, oldest first, except those whose session is gone: Consul deletes a query with
    its session; Beacon hides it from every read instead, which answers the same without a hook in
    session invalidation. Call with the store's lock held."""
    return sorted((q for q in rows(store).values() if not q.get("Session") or q["Session"] in store.sessions),
                  key=lambda q: q["CreateIndex"])


# ---------------------------------------------------------------------- lookup and templates
def lookup(store: StateStore, id_or_name: str) -> dict[str, Any] | None:
    """The stored query an ID or name resolves to (templates by longest prefix), or None."""
    with store.lock:
        table = live(store)
        for q in table:
            if q["ID"] == id_or_name:
                return q
        for q in table:
            if q["Name"] and q["Name"] == id_or_name:
                return q
        best = None
        for q in table:
            if q["Template"]["Type"] and id_or_name.startswith(q["Name"]):
                if best is None or len(q["Name"]) > len(best["Name"]):
                    best = q
        return best


def resolve(store: StateStore, id_or_name: str) -> dict[str, Any] | None:
    """The query ready to run: templates rendered against the asked name. A template asked for by
    its ID is an error, as in Consul (there is no name to render it with)."""
    found = lookup(store, id_or_name)
    if found is None:
        return None
    if not found["Template"]["Type"]:
        return found
    if id_or_name == found["ID"]:
        raise Failed("prepared query templates can only be resolved up by name, not by ID")
    return render(found, id_or_name)


def render(query: dict[str, Any], full_name: str, regexp: re.Pattern[str] | None = None) -> dict[str, Any]:
    """Interpolate every string of the query (except the template's own regexp)."""
    tmpl = query["Template"]
    if regexp is None and tmpl["Regexp"]:
        regexp = re.compile(tmpl["Regexp"])
    prefix = query["Name"]
    groups: list[str] = []
    if regexp is not None:
        m = regexp.match(full_name)
        if m is not None:
            groups = [m.group(0)] + [g or "" for g in m.groups()]
    values = {"name.full": full_name, "name.prefix": prefix,
              "name.suffix": full_name[len(prefix):] if full_name.startswith(prefix) else "",
              "agent.segment": ""}

    def sub(m: re.Match[str]) -> str:
        expr = m.group(1)
        if expr in values:
            return values[expr]
        mm = _MATCH.match(expr)
        if mm is not None:
            n = int(mm.group(1))
            return groups[n] if n < len(groups) else ""
        raise Failed(f"Failed to compile query template: unknown variable accessed: {expr}")

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return _INTERP.sub(sub, value) if "${" in value else value
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    out = copy.deepcopy(query)
    for key in ("Service", "DNS", "Session"):
        out[key] = walk(out[key])
    if tmpl.get("RemoveEmptyTags"):
        out["Service"]["Tags"] = [t for t in out["Service"]["Tags"] if t]
    return out


# ---------------------------------------------------------------------- execution
def _healthy(checks: list[HealthCheck], only_passing: bool) -> bool:
    """Consul's filter: critical (or any unknown status) drops an instance; warning too with OnlyPassing."""
    return all(c.status == "passing" or (c.status == "warning" and not only_passing) for c in checks)


def _tags_match(svc_tags: list[str], wanted: list[str]) -> bool:
    have = {t.lower() for t in svc_tags}
    for tag in wanted:
        if not tag:
            continue
        if tag.startswith("!"):
            if tag[1:].lower() in have:
                return False
        elif tag.lower() not in have:
            return False
    return True


def select(store: StateStore, query: dict[str, Any]) -> tuple[int, list[Instance]]:
    """The instances a (rendered) query returns, before ordering."""
    svc_q = query["Service"]
    idx, rows_ = store.health_service(svc_q["Service"])
    ignore = set(svc_q.get("IgnoreCheckIDs") or [])
    node_meta = svc_q.get("NodeMeta") or {}
    service_meta = svc_q.get("ServiceMeta") or {}
    out = []
    for node, svc, checks in rows_:
        considered = [c for c in checks if c.check_id not in ignore]
        if not _healthy(considered, bool(svc_q.get("OnlyPassing"))):
            continue
        if any(node.meta.get(k) != v for k, v in node_meta.items()):
            continue
        if any(svc.meta.get(k) != v for k, v in service_meta.items()):
            continue
        if not _tags_match(svc.tags, svc_q.get("Tags") or []):
            continue
        out.append((node, svc, checks))
    return idx, out


def order(instances: list[Instance], near: str, rng: random.Random | None = None) -> list[Instance]:
    """No coordinates: the ``near`` node first, the rest stable; no ``near``: shuffled."""
    if near:
        first = [i for i in instances if i[0].node.lower() == near.lower()]
        return first + [i for i in instances if i[0].node.lower() != near.lower()]
    out = list(instances)
    (rng or random).shuffle(out)
    return out


def execute(store: StateStore, query: dict[str, Any], agent_node: str, datacenter: str, near: str = "",
            limit: int = 0, encode: Callable[[Instance], Any] | None = None) -> tuple[int, dict[str, Any]]:
    """Run a rendered query; ``(index, response)`` in Consul's PreparedQueryExecuteResponse shape."""
    idx, instances = select(store, query)
    target = near or query["Service"].get("Near") or ""
    if target == "_agent":
        target = agent_node
    instances = order(instances, target)
    if limit > 0:
        instances = instances[:limit]
    nodes = [encode(i) for i in instances] if encode is not None else instances
    return max(idx, 1), {
        "Service": query["Service"]["Service"],
        "Nodes": nodes,
        "DNS": dict(query["DNS"]),
        "Datacenter": datacenter,
        "Failovers": 0,
    }


def install(store: StateStore) -> None:
    store.register_handlers(QueryCommands(store).handlers())
