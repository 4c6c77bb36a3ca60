"""Beacon's DNS interface: Consul-compatible answers for ``<service>.service.consul`` and friends.

Modules: :mod:`~beacon.dns.config` (settings), :mod:`~beacon.dns.router` (request -> reply, no
I/O), :mod:`~beacon.dns.records` (record builders), :mod:`~beacon.dns.limits` (size limits), :mod:`~beacon.dns.catalog` (store reads),
:mod:`~beacon.dns.cache` (answer cache), :mod:`~beacon.dns.recursor` (forwarding),
:mod:`~beacon.dns.protocol` (UDP/TCP framing) and :mod:`~beacon.dns.server` (listeners).
"""

from .config import DNSConfig, SOAConfig
from .recursor import Recursor, Recursors
from .router import Action, Context, Reply, route
from .server import DNSServer

__all__ = ["Action", "Context", "DNSConfig", "DNSServer", "Recursor", "Recursors", "Reply", "SOAConfig", "route"]
