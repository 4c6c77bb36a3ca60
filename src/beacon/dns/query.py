"""Prepared queries over DNS: ``<query>.query[.<dc>].<domain>`` and ``_<query>._<proto>.query.<domain>``.

The name is a query ID or name (dots allowed, labels re-joined; in the RFC 2782 form the protocol
label is ignored). The query runs as over HTTP (:func:`beacon.server.queries.execute`) with the DNS
server's node as ``_agent``. The TTL is the query's ``DNS.TTL`` when set, else the service TTL
(``dns_config.service_ttl``) of the service it names, as in Consul. An unknown query or datacenter
is NXDOMAIN. Answers depend on the queries table as well as the catalog, so they are never cached.
"""

from __future__ import annotations

from typing import Any, cast

from beacon.durations import parse_duration
from beacon.server import queries

from .catalog import Instance, Store
from .config import DNSConfig


def query_name(parts: tuple[str, ...]) -> str:
    if len(parts) == 2 and parts[0].startswith("_") and parts[1].startswith("_"):
        return parts[0][1:]
    return ".".join(parts)


def prepared_query_instances(store: Store, parts: tuple[str, ...], dc: str,
                             cfg: DNSConfig) -> tuple[list[Instance], int] | None:
    """``(instances in answer order, ttl)`` for the query ``parts`` name, or None if unknown."""
    if dc != cfg.datacenter:
        return None
    state = cast(Any, store)
    try:
        query = queries.resolve(state, query_name(parts))
    except Exception:  # a template that no longer renders answers like an unknown query
        return None
    if query is None:
        return None
    _, result = queries.execute(state, query, cfg.node_name, cfg.datacenter)
    ttl_text = query["DNS"].get("TTL") or ""
    ttl = cfg.service_ttl_for(query["Service"]["Service"])
    if ttl_text:
        try:
            ttl = int(parse_duration(ttl_text))
        except ValueError:
            pass
    return result["Nodes"], ttl
