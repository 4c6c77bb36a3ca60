"""Record builders and wire helpers: everything that turns catalog data into dnslib RRs.

No I/O and no state. The functions follow Consul's record rules (``agent/dns.go``): which address
a record uses, the ``<hex>.addr.<dc>.<domain>`` SRV targets, RFC 1464 node-meta TXT, SOA/NS.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping

from dnslib import AAAA, CNAME, NS, PTR, RR, SOA, SRV, TXT, A, DNSBuffer, DNSLabel, DNSRecord

from beacon.model import NODE_MAINT_CHECK_ID, SERVICE_MAINT_PREFIX, HealthCheck, Node, Service

from .config import DNSConfig

T_A, T_NS, T_CNAME, T_SOA, T_PTR, T_TXT, T_AAAA, T_SRV, T_OPT, T_AXFR, T_ANY = (
    1, 2, 5, 6, 12, 16, 28, 33, 41, 252, 255)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Which address families a record may use, per question type (Consul's TranslateAddressAccept).
ACCEPT_V4, ACCEPT_V6, ACCEPT_DOMAIN = 1, 2, 4
ACCEPT_ANY = ACCEPT_V4 | ACCEPT_V6 | ACCEPT_DOMAIN


def accept_for(qtype: int) -> int:
    if qtype == T_A:
        return ACCEPT_DOMAIN | ACCEPT_V4
    if qtype == T_AAAA:
        return ACCEPT_DOMAIN | ACCEPT_V6
    return ACCEPT_ANY


@functools.lru_cache(maxsize=1 << 16)  # ipaddress parses in pure Python; answers ask the same few again
def parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def translate_address(default: str, tagged: Mapping[str, object], accept: int) -> str:
    """The address a record should carry: a LAN tagged address of the asked family, else the default
    address if its kind is accepted, else ``""`` (Consul's ``TranslateAddress`` without WAN)."""
    v4 = tagged.get("lan_ipv4")
    v6 = tagged.get("lan_ipv6")
    v4s = _tagged_str(v4)
    v6s = _tagged_str(v6)
    if accept & ACCEPT_V4 and v4s:
        return v4s
    if accept & ACCEPT_V6 and v6s:
        return v6s
    if accept == ACCEPT_ANY:
        return default
    ip = parse_ip(default)
    if ip is None:
        return default if accept & ACCEPT_DOMAIN else ""
    if ip.version == 4:
        return default if accept & ACCEPT_V4 else ""
    return default if accept & ACCEPT_V6 else ""


def _tagged_str(value: object) -> str:
    if isinstance(value, dict):  # service tagged addresses are {"Address": ..., "Port": ...}
        return str(value.get("Address") or value.get("address") or "")
    return str(value or "")


def address_record(qtype: int, ip: IPAddress, owner: str | DNSLabel, ttl: int) -> RR | None:
    """A or AAAA for ``ip`` when the question type admits it (Consul's ``makeARecord``)."""
    if ip.version == 4:
        if qtype in (T_SRV, T_A, T_ANY, T_NS, T_TXT):
            return RR(owner, T_A, ttl=ttl, rdata=A(str(ip)))
        return None
    if qtype in (T_SRV, T_AAAA, T_ANY, T_NS, T_TXT):
        return RR(owner, T_AAAA, ttl=ttl, rdata=AAAA(str(ip)))
    return None


def ip_hex(ip: IPAddress) -> str:
    """``192.0.2.10`` -> ``c000020a``; IPv6 -> 32 hex digits (the ``.addr`` label)."""
    return ip.packed.hex()


def addr_fqdn(ip: IPAddress, dc: str, domain: str) -> str:
    return f"{ip_hex(ip)}.addr.{dc}.{domain}."


def node_fqdn(node: Node, dc: str, domain: str) -> str:
    return f"{node.node}.node.{dc}.{domain}."


def srv_record(owner: str | DNSLabel, ttl: int, weight: int, port: int, target: str) -> RR:
    return RR(owner, T_SRV, ttl=ttl, rdata=SRV(priority=1, weight=weight & 0xFFFF, port=port & 0xFFFF,
                                               target=target))


def cname_record(owner: str | DNSLabel, ttl: int, target: str) -> RR:
    return RR(owner, T_CNAME, ttl=ttl, rdata=CNAME(fqdn(target)))


def ptr_record(owner: str | DNSLabel, target: str) -> RR:
    return RR(owner, T_PTR, ttl=0, rdata=PTR(target))


def ns_record(domain: str, ttl: int, target: str) -> RR:
    return RR(domain + ".", T_NS, ttl=ttl, rdata=NS(target))


def soa_record(domain: str, cfg: DNSConfig, serial: int) -> RR:
    s = cfg.soa
    return RR(domain + ".", T_SOA, ttl=s.min_ttl, rdata=SOA(
        f"ns.{domain}.", f"hostmaster.{domain}.",
        (serial & 0xFFFFFFFF, s.refresh, s.retry, s.expire, s.min_ttl)))


def fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


def rfc1464(key: str, value: str) -> str:
    """``key=value`` with RFC 1464 quoting of the key (backquote, ``=``, outer spaces)."""
    key = key.replace("`", "``").replace("=", "`=")
    stripped = key.lstrip(" ")
    lead = len(key) - len(stripped)
    key = "` " * lead + stripped
    stripped = key.rstrip(" ")
    trail = len(key) - len(stripped)
    key = stripped + "` " * trail
    return key + "=" + value.replace("`", "``")


def node_meta_txt(owner: str | DNSLabel, meta: Mapping[str, str], ttl: int) -> list[RR]:
    out = []
    for key in sorted(meta):
        value = meta[key]
        text = value if key.lower().startswith("rfc1035-") else rfc1464(key, value)
        out.append(RR(owner, T_TXT, ttl=ttl, rdata=TXT(_txt_chunks(text))))
    return out


def _txt_chunks(text: str) -> list[bytes]:
    data = text.encode()
    return [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]


def aggregated_status(checks: Iterable[HealthCheck]) -> str:
    """Consul's api.HealthChecks.AggregatedStatus: maintenance > critical > warning > passing."""
    warning = critical = maintenance = False
    for c in checks:
        if c.check_id == NODE_MAINT_CHECK_ID or c.check_id.startswith(SERVICE_MAINT_PREFIX):
            maintenance = True
            continue
        if c.status == "passing":
            continue
        if c.status == "warning":
            warning = True
        elif c.status == "critical":
            critical = True
        else:
            return ""
    if maintenance:
        return "maintenance"
    if critical:
        return "critical"
    if warning:
        return "warning"
    return "passing"  # no checks, or all passing


def srv_weight(service: Service, checks: Iterable[HealthCheck]) -> int:
    """Weights.Passing or Weights.Warning by the instance's aggregated status (Consul's findWeight)."""
    weights = service.weights or {}
    passing = int(weights.get("Passing", weights.get("passing", 1)))
    warning = int(weights.get("Warning", weights.get("warning", 1)))
    own = [c for c in checks if c.service_name == service.service or not c.service_name]
    status = aggregated_status(own)
    if status == "warning":
        return warning
    if status == "passing":
        return passing
    if status in ("critical", "maintenance"):
        return 0
    return 1


# ---------------------------------------------------------------------- wire packing
class _PlainBuffer(DNSBuffer):
    """A DNSBuffer that never emits compression pointers (``disable_compression`` and size checks)."""

    def encode_name(self, name: object) -> None:
        self.encode_name_nocompress(name)


def pack(msg: DNSRecord, compress: bool = True) -> bytes:
    """Pack a message, with or without name compression (dnslib itself always compresses)."""
    msg.set_header_qa()
    buffer = DNSBuffer() if compress else _PlainBuffer()
    msg.header.pack(buffer)
    for q in msg.questions:
        q.pack(buffer)
    for section in (msg.rr, msg.auth, msg.ar):
        for rr in section:
            rr.pack(buffer)
    return bytes(buffer.data)
