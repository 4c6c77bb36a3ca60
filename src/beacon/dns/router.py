"""From one request to one reply, with no I/O: the heart of the DNS interface.

:func:`route` takes the request bytes and a :class:`Context` (store, config, transport, which
answer order to use, clock, random source) and returns a :class:`Reply`:

* ``ANSWER``: ``wire`` is the whole response (its ID is the request's);
* ``RECURSE``: the name is outside Beacon's zones (or a PTR nobody owns) and recursors are set; the
  caller forwards the request and sends ``wire`` (a SERVFAIL) only if every recursor fails;
* ``DROP``: nothing can be answered (shorter than a header, or a response packet).

Response codes follow Consul's classic DNS server (``agent/dns.go`` on miekg/dns):

=====================================================  ==========================================
request                                                reply
=====================================================  ==========================================
< 12 bytes, or QR set                                  dropped (miekg/dns does the same)
opcode other than QUERY/NOTIFY                         NOTIMP, header only
QDCOUNT != 1, ANCOUNT/NSCOUNT > 1, ARCOUNT > 2, junk   FORMERR, header only
name outside the domain and ``arpa.``, no recursors    REFUSED
unknown name/service/node/dc, bad label layout         NXDOMAIN + SOA in authority
service known, no record of the asked type             NOERROR, empty answer + SOA
node known, qtype not A/AAAA/ANY/TXT                   NOERROR, empty answer, no SOA
AXFR                                                   NOTIMP
every recursor failed                                  SERVFAIL (RA set)
=====================================================  ==========================================
"""

from __future__ import annotations

import enum
import ipaddress
import math
import random
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from dnslib import EDNS0, RR, DNSHeader, DNSQuestion, DNSRecord, EDNSOption

from beacon.model import Node

from . import records as r
from .catalog import (
    CONSUL_SERVICE,
    Instance,
    Store,
    healthy_instances,
    node_by_address,
    service_by_address,
)
from .config import DNSConfig
from .limits import fit_udp, request_opt, trim
from .query import prepared_query_instances

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5

MAX_RECURSION = 3           # CNAMEs into the domain resolved this deep
# How many answer orders a cached answer rotates through: every order when n! <= this, else this
# many random orders.
MAX_VARIANTS = 24

KINDS = frozenset({"service", "connect", "virtual", "ingress", "node", "query", "addr"})

T = TypeVar("T")


class Action(enum.Enum):
    ANSWER = "answer"
    RECURSE = "recurse"
    DROP = "drop"


@dataclass(slots=True)
class Reply:
    action: Action
    wire: bytes = b""
    rcode: int = NOERROR
    # May the server reuse ``wire`` (with the ID patched) for the same request bytes while the
    # catalog index is unchanged? ``variants`` answers, built with variant 0..variants-1, should be
    # rotated; ``time_dependent`` ones (they carry an SOA serial) expire within a second.
    cacheable: bool = False
    variants: int = 1
    time_dependent: bool = False
    # CNAME targets outside the domain that the server should resolve through the recursors and add
    # to the answer (A/AAAA queries) or as SRV glue, as Consul does. Such replies are never cached.
    external: tuple[str, ...] = ()


@dataclass
class Context:
    store: Store
    cfg: DNSConfig
    tcp: bool = False
    variant: int = 0
    now: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    # Filled in while routing.
    variants: int = 1
    time_dependent: bool = False
    cacheable: bool = True
    external: list[str] = field(default_factory=list)

    def permute(self, items: Sequence[T]) -> list[T]:
        """Answer order number ``variant``: all n! orders in turn for small n, else a random one."""
        n = len(items)
        if n <= 1:
            return list(items)
        total = math.factorial(n) if n < 8 else MAX_VARIANTS + 1
        if total <= MAX_VARIANTS:
            self.variants = max(self.variants, total)
            return _kth_permutation(items, self.variant % total)
        self.variants = max(self.variants, MAX_VARIANTS)
        out = list(items)
        self.rng.shuffle(out)
        return out

    def soa(self, domain: str) -> RR:
        self.time_dependent = True  # the serial is the current Unix time, as in Consul
        return r.soa_record(domain, self.cfg, int(self.now()))


def _kth_permutation(items: Sequence[T], k: int) -> list[T]:
    pool = list(items)
    out = []
    for i in range(len(pool), 0, -1):
        idx, k = divmod(k, math.factorial(i - 1))
        out.append(pool.pop(idx))
    return out


# ---------------------------------------------------------------------- entry point
def route(data: bytes, ctx: Context) -> Reply:
    if len(data) < 12:
        return Reply(Action.DROP)
    ident, flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!6H", data)
    if flags & 0x8000:
        return Reply(Action.DROP)  # a response: answering could start a loop
    opcode = (flags >> 11) & 0xF
    if opcode not in (0, 4):
        return _header_only(ident, flags, opcode, NOTIMP)
    if qdcount != 1 or ancount > 1 or nscount > 1 or arcount > 2:
        return _header_only(ident, flags, 0, FORMERR)
    try:
        req = DNSRecord.parse(data)
    except Exception:  # dnslib raises several types on junk; all mean "cannot decode"
        return _header_only(ident, flags, 0, FORMERR)
    if not req.questions:
        return _header_only(ident, flags, 0, FORMERR)

    cfg = ctx.cfg
    labels = tuple(label.decode("utf-8", "replace").lower() for label in req.q.qname.label)
    domain = _zone_of(labels, cfg)
    if domain is not None:
        return _handle_query(req, labels[:len(labels) - domain.count(".") - 1], domain, ctx)
    if labels and labels[-1] == "arpa":
        return _handle_ptr(req, labels, ctx)
    if cfg.recursors:
        return Reply(Action.RECURSE, _servfail(req, ctx))
    reply = _reply_to(req, aa=False, ra=False)
    reply.header.rcode = REFUSED
    return _done(reply, ctx, cacheable=True)


def servfail_for(data: bytes, ctx: Context) -> bytes:
    """The SERVFAIL sent when every recursor failed (public for the server's error path)."""
    try:
        return _servfail(DNSRecord.parse(data), ctx)
    except Exception:
        ident, flags = struct.unpack_from("!2H", data)
        return _header_only(ident, flags, 0, SERVFAIL).wire


def _zone_of(labels: tuple[str, ...], cfg: DNSConfig) -> str | None:
    """The configured domain (or alt domain) ``labels`` fall in; the longer one wins."""
    best = None
    for domain in (cfg.domain, cfg.alt_domain):
        if not domain:
            continue
        dl = tuple(domain.split("."))
        if labels[len(labels) - len(dl):] == dl and len(labels) >= len(dl):
            if best is None or len(domain) > len(best):
                best = domain
    return best


# ---------------------------------------------------------------------- message scaffolding
def _header_only(ident: int, req_flags: int, opcode: int, rcode: int) -> Reply:
    flags = 0x8000 | (opcode << 11) | (req_flags & 0x0110) | rcode  # keep RD and CD
    return Reply(Action.ANSWER, struct.pack("!6H", ident, flags, 0, 0, 0, 0), rcode)


def _reply_to(req: DNSRecord, aa: bool, ra: bool) -> DNSRecord:
    h = req.header
    header = DNSHeader(id=h.id, bitmap=0, qr=1, opcode=h.opcode, aa=int(aa), ra=int(ra))
    if h.opcode == 0:
        header.rd = h.rd
        header.cd = h.cd
    return DNSRecord(header, q=DNSQuestion(req.q.qname, req.q.qtype, req.q.qclass))


def _set_edns(req: DNSRecord, reply: DNSRecord) -> None:
    """Echo EDNS: same UDP size; Client Subnet echoed with scope 0 (answers are global)."""
    opt = request_opt(req)
    if opt is None:
        return
    opts = []
    for o in opt.rdata or []:
        if o.code == 8 and len(o.data) >= 4:
            opts.append(EDNSOption(8, o.data[:3] + b"\x00" + o.data[4:]))
            break
    reply.add_ar(EDNS0(udp_len=opt.rclass, opts=opts))


def _servfail(req: DNSRecord, ctx: Context) -> bytes:
    reply = _reply_to(req, aa=False, ra=True)
    reply.header.rcode = SERVFAIL
    _set_edns(req, reply)
    return r.pack(reply, not ctx.cfg.disable_compression)


def _done(reply: DNSRecord, ctx: Context, cacheable: bool, wire: bytes | None = None) -> Reply:
    if wire is None:
        wire = r.pack(reply, not ctx.cfg.disable_compression)
    if ctx.external:
        return Reply(Action.ANSWER, wire, reply.header.rcode, False, ctx.variants, ctx.time_dependent,
                     tuple(dict.fromkeys(ctx.external)))
    return Reply(Action.ANSWER, wire, reply.header.rcode, cacheable, ctx.variants, ctx.time_dependent)


# ---------------------------------------------------------------------- the domain zone
def _handle_query(req: DNSRecord, labels: tuple[str, ...], domain: str, ctx: Context) -> Reply:
    cfg = ctx.cfg
    reply = _reply_to(req, aa=True, ra=bool(cfg.recursors))
    qtype = req.q.qtype
    if qtype == r.T_SOA:
        reply.add_answer(ctx.soa(domain))
        ns, glue = _nameservers(domain, ctx)
        reply.auth.extend(ns)
        reply.ar.extend(glue)
    elif qtype == r.T_NS:
        ns, glue = _nameservers(domain, ctx)
        reply.rr.extend(ns)
        reply.ar.extend(glue)
    elif qtype == r.T_AXFR:
        reply.header.rcode = NOTIMP
    else:
        rcode, nodata = _dispatch(req.q.qname, qtype, labels, domain, reply, ctx, MAX_RECURSION)
        reply.header.rcode = rcode
        if rcode == NXDOMAIN or nodata:
            reply.add_auth(ctx.soa(domain))
    _set_edns(req, reply)
    wire = fit_udp(req, reply, ctx.tcp, ctx.cfg, trim(req, reply, ctx.tcp, ctx.cfg))
    return _done(reply, ctx, cacheable=ctx.cacheable, wire=wire)


def _nameservers(domain: str, ctx: Context) -> tuple[list[RR], list[RR]]:
    """Up to three healthy servers (the ``consul`` service) as NS records, with their addresses.
    Beacon's dev agent may not register that service; then the local node stands in for it."""
    cfg = ctx.cfg
    nodes = [node for node, _, _ in healthy_instances(ctx.store, CONSUL_SERVICE, "", cfg.only_passing)]
    if not nodes and cfg.node_name:
        local = ctx.store.get_node(cfg.node_name)
        nodes = [local] if local is not None else []
    ns: list[RR] = []
    glue: list[RR] = []
    ttl = cfg.node_ttl_seconds
    for node in ctx.permute(nodes):
        target = r.node_fqdn(node, node.datacenter or cfg.datacenter, domain).lower()
        ns.append(r.ns_record(domain, ttl, target))
        glue.extend(_node_records(node, r.T_ANY, target, ttl, ctx, MAX_RECURSION))
        if len(ns) >= 3:
            break
    return ns, glue


def _parse_locality(suffixes: tuple[str, ...], cfg: DNSConfig) -> tuple[bool, str]:
    """``(valid, datacenter)`` from the labels after the keyword; a peer yields datacenter ``""``."""
    if not suffixes:
        return True, cfg.datacenter
    if len(suffixes) == 1:
        return True, suffixes[0]
    if len(suffixes) in (2, 4):
        dc = peer = ""
        for i in range(0, len(suffixes), 2):
            if suffixes[i + 1] == "dc":
                dc = suffixes[i]
            elif suffixes[i + 1] == "peer":
                peer = suffixes[i]
            else:
                return False, ""
        if dc and peer:
            return False, ""
        return True, dc  # peering is not supported: a peer name finds nothing
    return False, ""


def _dispatch(qname: object, qtype: int, labels: tuple[str, ...], domain: str, reply: DNSRecord,
              ctx: Context, depth: int) -> tuple[int, bool]:
    """Fill ``reply`` for a name inside the domain; return ``(rcode, nodata)``."""
    kind, parts, suffixes = "", (), ()
    for i in range(len(labels) - 1, -1, -1):
        label = labels[i]
        if label in KINDS:
            kind, parts, suffixes = label, labels[:i], labels[i + 1:]
            break
        if qtype == r.T_SRV and label.startswith("_"):
            kind, parts, suffixes = "service", labels[:i + 1], labels[i + 1:]
            break
    if not kind or not parts:
        return NXDOMAIN, False

    cfg = ctx.cfg
    if kind == "addr":
        return _addr_lookup(qname, qtype, parts, reply, ctx), False
    valid, dc = _parse_locality(suffixes, cfg)
    if not valid or dc != cfg.datacenter:
        return NXDOMAIN, False  # bad layout, unknown datacenter, or a peer
    if kind == "query":
        ctx.cacheable = False  # depends on the queries table, which the catalog index does not cover
        found = prepared_query_instances(ctx.store, parts, dc, cfg)
        if not found or not found[0]:
            return NXDOMAIN, False
        instances, ttl = found
        if qtype == r.T_SRV:
            _srv_records(qname, instances, dc, domain, ttl, reply, ctx, depth)
        else:
            _address_records(qname, qtype, instances, dc, domain, ttl, reply, ctx, depth)
        return NOERROR, not reply.rr
    if kind == "node":
        return _node_lookup(qname, qtype, ".".join(parts), domain, reply, ctx, depth), False
    if kind != "service":
        return NXDOMAIN, False  # connect/ingress/virtual: Beacon has no mesh gateways or VIPs
    if len(parts) == 2 and parts[0].startswith("_") and parts[1].startswith("_"):
        tag = parts[1][1:]
        service, tag = parts[0][1:], ("" if tag == "tcp" else tag)
    else:
        service, tag = parts[-1], ".".join(parts[:-1])
    return _service_lookup(qname, qtype, service, tag, dc, domain, reply, ctx, depth)


def _addr_lookup(qname: object, qtype: int, parts: tuple[str, ...], reply: DNSRecord, ctx: Context) -> int:
    if len(parts) != 1 or len(parts[0]) not in (8, 32):
        return NXDOMAIN
    try:
        ip = ipaddress.ip_address(bytes.fromhex(parts[0]))
    except ValueError:
        return NXDOMAIN
    rtype = r.T_A if ip.version == 4 else r.T_AAAA
    record = r.address_record(rtype, ip, qname, ctx.cfg.node_ttl_seconds)
    assert record is not None
    if qtype in (rtype, r.T_ANY):
        reply.add_answer(record)
    else:
        reply.add_ar(record)  # Consul puts it in Additional and answers NOERROR
    return NOERROR


def _node_lookup(qname: object, qtype: int, name: str, domain: str, reply: DNSRecord, ctx: Context,
                 depth: int) -> int:
    if qtype not in (r.T_ANY, r.T_A, r.T_AAAA, r.T_TXT):
        return NOERROR  # Consul answers other types with an empty NOERROR, known node or not
    node = ctx.store.get_node(name)
    if node is None:
        return NXDOMAIN
    cfg = ctx.cfg
    ttl = cfg.node_ttl_seconds
    if qtype != r.T_TXT:
        reply.rr.extend(_node_records(node, qtype, qname, ttl, ctx, depth))
    if cfg.enable_additional_node_meta_txt or qtype in (r.T_TXT, r.T_ANY):
        target = reply.rr if qtype in (r.T_TXT, r.T_ANY) else reply.ar
        target.extend(r.node_meta_txt(qname, node.meta, ttl))
    return NOERROR


def _node_records(node: Node, qtype: int, owner: object, ttl: int, ctx: Context, depth: int) -> list[RR]:
    addr = r.translate_address(node.address, node.tagged_addresses, r.accept_for(qtype))
    if not addr:
        return []  # e.g. AAAA for an IPv4-only node: NOERROR with no records
    ip = r.parse_ip(addr)
    if ip is None:
        return [r.cname_record(owner, ttl, addr), *_resolve_cname(addr, ctx, depth)]
    record = r.address_record(qtype, ip, owner, ttl)
    return [record] if record is not None else []


def _resolve_cname(name: str, ctx: Context, depth: int) -> list[RR]:
    """Records for a CNAME target inside the domain (resolved internally, ANY). A target outside the
    domain is noted for the server to resolve through the recursors, when there are any."""
    lname = r.fqdn(name).lower()
    labels = tuple(lname.rstrip(".").split("."))
    domain = _zone_of(labels, ctx.cfg)
    if domain is None:
        if ctx.cfg.recursors:
            ctx.external.append(lname)
        return []
    if depth < 1:
        return []
    sub = DNSRecord(DNSHeader(), q=DNSQuestion(r.fqdn(name), r.T_ANY))
    _dispatch(sub.q.qname, r.T_ANY, labels[:len(labels) - domain.count(".") - 1], domain, sub, ctx,
              depth - 1)
    return list(sub.rr)


def _service_lookup(qname: object, qtype: int, service: str, tag: str, dc: str, domain: str,
                    reply: DNSRecord, ctx: Context, depth: int) -> tuple[int, bool]:
    cfg = ctx.cfg
    instances = healthy_instances(ctx.store, service, tag, cfg.only_passing)
    if not instances:
        return NXDOMAIN, False
    instances = ctx.permute(instances)
    ttl = cfg.service_ttl_for(service)
    if qtype == r.T_SRV:
        _srv_records(qname, instances, dc, domain, ttl, reply, ctx, depth)
    else:
        _address_records(qname, qtype, instances, dc, domain, ttl, reply, ctx, depth)
    if not reply.rr:
        return NOERROR, True
    return NOERROR, False


def _instance_records(qname: object, qtype: int, inst: Instance, dc: str, domain: str, ttl: int,
                      ctx: Context, depth: int) -> tuple[list[RR], list[RR]]:
    """Answer and Additional records for one instance (Consul's makeNodeServiceRecords)."""
    node, svc, checks = inst
    accept = r.accept_for(qtype)
    service_addr = r.translate_address(svc.address, svc.tagged_addresses, accept) if svc.address else ""
    node_addr = r.translate_address(node.address, node.tagged_addresses, accept)
    if not service_addr and not node_addr:
        return [], []
    node_ip = r.parse_ip(node_addr) if node_addr else None
    service_ip = r.parse_ip(service_addr) if service_addr else None
    if not service_addr and node_ip is not None:
        if node.address != node_addr:  # a tagged address: name it by IP, not by node
            return _ip_records(qname, qtype, node_ip, inst, dc, domain, ttl)
        return _node_target_records(qname, qtype, node_ip, inst, dc, domain, ttl, ctx)
    if not service_addr:
        return _fqdn_records(qname, qtype, node_addr, inst, ttl, ctx, depth)
    if service_ip is not None:
        return _ip_records(qname, qtype, service_ip, inst, dc, domain, ttl)
    if r.fqdn(service_addr).lower() == str(qname).lower() and node_ip is not None:
        return _node_target_records(qname, qtype, node_ip, inst, dc, domain, ttl, ctx)
    return _fqdn_records(qname, qtype, service_addr, inst, ttl, ctx, depth)


def _ip_records(qname: object, qtype: int, ip: r.IPAddress, inst: Instance, dc: str, domain: str,
                ttl: int) -> tuple[list[RR], list[RR]]:
    if qtype == r.T_SRV:
        target = r.addr_fqdn(ip, dc, domain)
        glue = r.address_record(qtype, ip, target, ttl)
        _, svc, checks = inst
        return [r.srv_record(qname, ttl, r.srv_weight(svc, checks), svc.port, target)], [glue] if glue else []
    record = r.address_record(qtype, ip, qname, ttl)
    return ([record] if record is not None else []), []


def _node_target_records(qname: object, qtype: int, ip: r.IPAddress, inst: Instance, dc: str,
                         domain: str, ttl: int, ctx: Context) -> tuple[list[RR], list[RR]]:
    node, svc, checks = inst
    if qtype == r.T_SRV:
        target = r.node_fqdn(node, node.datacenter or ctx.cfg.datacenter, domain)
        glue = r.address_record(qtype, ip, target, ttl)
        return [r.srv_record(qname, ttl, r.srv_weight(svc, checks), svc.port, target)], [glue] if glue else []
    record = r.address_record(qtype, ip, qname, ttl)
    return ([record] if record is not None else []), []


def _fqdn_records(qname: object, qtype: int, name: str, inst: Instance, ttl: int, ctx: Context,
                  depth: int) -> tuple[list[RR], list[RR]]:
    more = []
    for rr in _resolve_cname(name, ctx, depth):
        if rr.rtype in (r.T_CNAME, r.T_A, r.T_AAAA):
            rr.ttl = ttl
            more.append(rr)
    if qtype == r.T_SRV:
        _, svc, checks = inst
        return [r.srv_record(qname, ttl, r.srv_weight(svc, checks), svc.port, r.fqdn(name))], more
    return [r.cname_record(qname, ttl, name), *more], []


def _srv_records(qname: object, instances: list[Instance], dc: str, domain: str, ttl: int,
                 reply: DNSRecord, ctx: Context, depth: int) -> None:
    seen: set[tuple[str, str, int]] = set()
    meta_txt = ctx.cfg.enable_additional_node_meta_txt
    for inst in instances:
        node, svc, _ = inst
        address = r.translate_address(svc.address, svc.tagged_addresses, r.ACCEPT_ANY) if svc.address else ""
        key = (node.node, address, svc.port)
        if key in seen:
            continue
        seen.add(key)
        answers, extra = _instance_records(qname, r.T_SRV, inst, dc, domain, ttl, ctx, depth)
        reply.rr.extend(answers)
        reply.ar.extend(extra)
        if meta_txt:
            owner = r.node_fqdn(node, node.datacenter or ctx.cfg.datacenter, domain)
            reply.ar.extend(r.node_meta_txt(owner, node.meta, ttl))


def _address_records(qname: object, qtype: int, instances: list[Instance], dc: str, domain: str,
                     ttl: int, reply: DNSRecord, ctx: Context, depth: int) -> None:
    seen: set[tuple[int, str]] = set()
    cname_answer: list[RR] = []
    count = 0
    limit = ctx.cfg.a_record_limit
    for inst in instances:
        records, _ = _instance_records(qname, qtype, inst, dc, domain, ttl, ctx, depth)
        if not records:
            continue
        key = (records[0].rtype, repr(records[0].rdata))
        if key in seen:
            continue
        seen.add(key)
        if records[0].rtype == r.T_CNAME:
            if not cname_answer:
                cname_answer = records
            continue
        reply.rr.extend(records)
        count += 1
        if count == limit:
            return
    if not reply.rr and cname_answer:
        reply.rr.extend(cname_answer)


# ---------------------------------------------------------------------- reverse lookups
def _ip_from_arpa(labels: tuple[str, ...]) -> str:
    if labels[-2:] == ("in-addr", "arpa") and len(labels) == 6:
        try:
            return str(ipaddress.IPv4Address(".".join(reversed(labels[:4]))))
        except ValueError:
            return ""
    if labels[-2:] == ("ip6", "arpa") and len(labels) == 34:
        nibbles = "".join(reversed(labels[:32]))
        try:
            return str(ipaddress.IPv6Address(bytes.fromhex(nibbles)))
        except ValueError:
            return ""
    return ""


def _handle_ptr(req: DNSRecord, labels: tuple[str, ...], ctx: Context) -> Reply:
    cfg = ctx.cfg
    reply = _reply_to(req, aa=True, ra=bool(cfg.recursors))
    if req.q.qtype == r.T_SOA:
        reply.add_auth(ctx.soa(cfg.domain))
    name = ".".join(labels) + "."
    node = node_by_address(ctx.store, name)
    if node is not None:
        reply.add_answer(r.ptr_record(req.q.qname, r.node_fqdn(node, node.datacenter or cfg.datacenter,
                                                               cfg.domain)))
    else:
        ip = _ip_from_arpa(labels)
        svc = service_by_address(ctx.store, ip) if ip else None
        if svc is not None:
            reply.add_answer(r.ptr_record(req.q.qname, f"{svc.service}.service.{cfg.datacenter}.{cfg.domain}."))
    if not reply.rr:
        if cfg.recursors:
            return Reply(Action.RECURSE, _servfail(req, ctx))
        reply.header.rcode = NXDOMAIN
        reply.add_auth(ctx.soa(cfg.domain))
    _set_edns(req, reply)
    return _done(reply, ctx, cacheable=True, wire=fit_udp(req, reply, ctx.tcp, ctx.cfg, None))
