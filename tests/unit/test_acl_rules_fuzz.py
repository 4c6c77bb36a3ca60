"""Generated ACL rules: a policy's ``Rules`` parse or get a :class:`RuleError`, never another exception.

A token's policies are parsed on every server that resolves it, from text anyone with
``acl:write`` supplied. Hypothesis writes JSON documents (Consul's resources, prefixes and scalars
with values of every JSON kind) and HCL built from well-formed rules with pieces cut, repeated or
replaced. What parses must hold only Consul's policies.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from beacon.acl.rules import POLICIES, RESOURCES, SCALARS, RuleError, parse

KEYS = st.sampled_from([*RESOURCES, *(r + "_prefix" for r in RESOURCES), *SCALARS, "policy", "intentions",
                        "keys", "bogus", ""])
POLICY = st.sampled_from([*POLICIES, "Read", "", "admin"])
JSONS = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | POLICY | st.text(max_size=8),
                     lambda kids: st.lists(kids, max_size=3) | st.dictionaries(KEYS | st.text(max_size=6), kids,
                                                                              max_size=3),
                     max_leaves=12)
GOOD_HCL = ['key_prefix "app/" { policy = "read" }', 'service "web" { policy = "write" }',
            'key_prefix "" { policy = "list" }', 'operator = "read"', 'key "a" { policy = "deny" }',
            'session_prefix "" {\n  policy = "write"\n}', 'acl = "write"', 'query "q" { policy = "read" }',
            'service_prefix "db" {\n  policy = "read"\n  intentions = "write"\n}']


def check(text: str) -> None:
    try:
        rules = parse(text)
    except RuleError as exc:
        assert str(exc).startswith("Failed to parse ACL rules"), exc
        return
    for table in (rules.exact, rules.prefix):
        for resource, entries in table.items():
            assert resource in RESOURCES and all(p in POLICIES for p in entries.values()), table
    assert set(rules.scalar) <= set(SCALARS) and all(p in POLICIES for p in rules.scalar.values())


@settings(max_examples=500, deadline=None)
@given(doc=st.dictionaries(KEYS, JSONS, max_size=4) | JSONS)
def test_generated_json_rules_parse_or_get_a_rule_error(doc) -> None:
    check(json.dumps(doc))


@st.composite
def hcl(draw: st.DrawFn) -> str:
    text = "\n".join(draw(st.lists(st.sampled_from(GOOD_HCL), min_size=1, max_size=4)))
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 12)))
        piece = draw(st.sampled_from(["", "{", "}", '"', "=", "\n", "#", "/*", "policy", text[i:j] * 2])
                     | st.text(max_size=6))
        text = text[:i] + piece + text[j:]
    return text


@settings(max_examples=300, deadline=None)
@given(text=hcl())
def test_generated_hcl_rules_parse_or_get_a_rule_error(text: str) -> None:
    check(text)


def test_the_generators_reach_both_outcomes() -> None:
    """Armed: well-formed rules parse to what they say, broken ones are a RuleError."""
    rules = parse("\n".join(GOOD_HCL))
    assert rules.prefix["key"]["app/"] == "read" and rules.scalar["operator"] == "read"
    assert parse(json.dumps({"service": {"web": {"policy": "write"}}})).exact["service"]["web"] == "write"
    for bad in ('key_prefix "app/" { policy = "admin" }', 'key_prefix "app/" {', '{"key": 3}', "[1]"):
        try:
            parse(bad)
        except RuleError:
            continue
        raise AssertionError(f"{bad!r} parsed")
