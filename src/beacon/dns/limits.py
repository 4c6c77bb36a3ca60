"""Message size limits: Consul's UDP/TCP answer trimming, and a guard against oversized UDP replies."""

from __future__ import annotations

from collections.abc import Callable

from dnslib import RR, DNSRecord

from . import records as r
from .config import DNSConfig

DEFAULT_UDP_SIZE = 512
MAX_UDP_SIZE = 65535 - 68   # bigger EDNS buffers are capped here
MAX_TCP_SIZE = 65523
MAX_UDP_ANSWERS = 8         # hard ceiling on udp_answer_limit


def request_opt(req: DNSRecord) -> RR | None:
    for rr in req.ar:
        if rr.rtype == r.T_OPT:
            return rr
    return None


def trim(req: DNSRecord, reply: DNSRecord, tcp: bool, cfg: DNSConfig) -> bytes | None:
    """Consul's trimUDPResponse/trimTCPResponse (run after the OPT record is added, as in Consul);
    sets TC only with ``enable_truncate``. Unlike Consul, rebuilding Additional keeps the OPT record.

    Returns the packed reply when the last size check packed exactly what will be sent (the common
    case), so it is not packed again."""
    compress = not cfg.disable_compression
    before = len(reply.rr)
    opt = [rr for rr in reply.ar if rr.rtype == r.T_OPT]
    extra = [rr for rr in reply.ar if rr.rtype != r.T_OPT]
    index = _index_rrs(extra) if extra else None
    measure_plain = not compress
    if tcp:
        max_size = MAX_TCP_SIZE
        cut = 1024 if req.q.qtype == r.T_SRV else 4096
        if len(reply.rr) > cut:
            reply.rr = reply.rr[:cut]
    else:
        max_size = udp_limit(req)
        max_answers = min(MAX_UDP_ANSWERS, cfg.udp_answer_limit)
        if max_size == DEFAULT_UDP_SIZE and len(reply.rr) > max_answers:
            measure_plain = True  # measure as if uncompressed, send compressed
            reply.rr = reply.rr[:max_answers]
            if index is not None:
                _sync_extra(index, reply, opt)
        max_size -= 8
    packed: list[bytes | None] = [None]  # the last packing, while it still matches the reply

    def size() -> int:
        wire = r.pack(reply, not measure_plain)
        packed[0] = wire if measure_plain != compress else None
        return len(wire)

    while len(reply.rr) > 1 and size() > max_size:
        packed[0] = None
        reply.auth = []
        if size() - max_size > 100:
            reply.rr = reply.rr[:_binary_truncate(reply, size, max_size, index, opt)]
        else:
            reply.rr = reply.rr[:-1]
        if index is not None:
            _sync_extra(index, reply, opt)
        packed[0] = None
    if len(reply.rr) < before and cfg.enable_truncate:
        reply.header.tc = 1
        return None
    return packed[0]


def udp_limit(req: DNSRecord) -> int:
    opt = request_opt(req)
    if opt is not None and opt.rclass > DEFAULT_UDP_SIZE:
        return min(opt.rclass, MAX_UDP_SIZE)
    return DEFAULT_UDP_SIZE


def fit_udp(req: DNSRecord, reply: DNSRecord, tcp: bool, cfg: DNSConfig, wire: bytes | None) -> bytes:
    """Pack the reply (unless ``wire`` already is it), never bigger than a UDP client accepts.

    Consul's trimming only cuts answers when there are several, so a single answer with many
    node-meta TXT records in Additional could overflow: drop Additional (keeping OPT), then
    Authority, and as a last resort send no answers with TC set so the client retries over TCP."""
    compress = not cfg.disable_compression
    if wire is None:
        wire = r.pack(reply, compress)
    if tcp:
        return wire
    limit = udp_limit(req)
    if len(wire) <= limit:
        return wire
    opt = [rr for rr in reply.ar if rr.rtype == r.T_OPT]
    extra = [rr for rr in reply.ar if rr.rtype != r.T_OPT]
    while extra and len(wire) > limit:
        extra.pop()
        reply.ar = extra + opt
        wire = r.pack(reply, compress)
    if len(wire) > limit:
        reply.auth = []
        wire = r.pack(reply, compress)
    if len(wire) > limit:
        reply.rr = []
        reply.header.tc = 1
        wire = r.pack(reply, compress)
    return wire


def _index_rrs(rrs: list[RR]) -> dict[str, RR]:
    index: dict[str, RR] = {}
    for rr in rrs:
        index.setdefault(str(rr.rname).lower(), rr)
    return index


def _sync_extra(index: dict[str, RR], reply: DNSRecord, opt: list[RR]) -> None:
    """Keep only the Additional records the remaining SRV targets need (Consul's syncExtra)."""
    extra: list[RR] = []
    resolved: set[str] = set()
    for ans in reply.rr:
        if ans.rtype != r.T_SRV:
            continue
        target = str(ans.rdata.target).lower()
        while target not in resolved:
            resolved.add(target)
            rr = index.get(target)
            if rr is None:
                break
            extra.append(rr)
            if rr.rtype != r.T_CNAME:
                break
            target = str(rr.rdata.label).lower()
    reply.ar = extra + opt


def _binary_truncate(reply: DNSRecord, size: Callable[[], int], max_size: int,
                     index: dict[str, RR] | None, opt: list[RR]) -> int:
    original = reply.rr
    start, end = 0, len(original) + 1
    try:
        while end - start > 1:
            median = start + (end - start) // 2
            reply.rr = original[:median]
            if index is not None:
                _sync_extra(index, reply, opt)
            length = size()
            if length <= max_size:
                if max_size - length < 10:
                    return median
                start = median
            else:
                end = median
        return start
    finally:
        reply.rr = original
