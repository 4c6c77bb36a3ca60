"""DNS test fixtures (defined in dnshelpers so test modules can import the helpers by name)."""

from dnshelpers import served, upstream  # noqa: F401
