"""The acl.tokens block: the names Consul takes, legacy aliases, and the dns token."""

from __future__ import annotations

from beacon.acl.config import merge_acl_block
from beacon.acl.dns_view import agent_dns_token


def test_acl_tokens_dns_is_read_and_goes_before_the_default_token() -> None:
    into: dict = {}
    merge_acl_block(into, {"enabled": True, "tokens": {"dns": "d", "default": "x", "master": "m"}}, "test.json")
    assert into["tokens"] == {"dns": "d", "default": "x", "initial_management": "m"}
    assert agent_dns_token(into["tokens"]) == "d"
    assert agent_dns_token({"default": "x"}) == "x"
    assert agent_dns_token({"dns": "", "default": ""}) == "anonymous"
