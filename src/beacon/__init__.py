"""Beacon: service discovery and health checking, compatible with Consul's HTTP API and DNS."""

__version__ = "0.1.0"
# The Consul release whose API shapes Beacon follows; reported where clients read a version.
CONSUL_COMPAT_VERSION = "1.21.5"
