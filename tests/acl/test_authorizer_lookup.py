"""The authorizer's longest-prefix lookup (one dict probe per distinct prefix length) and its
per-authorizer decision cache decide exactly as a plain scan of every rule does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from beacon.acl.authorizer import _GRANTS, Authorizer
from beacon.acl.rules import DENY, LIST, POLICIES, READ, WRITE, Rules

NAMES = st.text(alphabet="ab/", max_size=5)


def _scan(rules: Rules, default_allow: bool, resource: str, name: str, access: str) -> bool:
    """Consul's rule, written the slow and obvious way: exact, else the longest matching prefix."""
    policy = rules.exact[resource].get(name)
    if policy is None:
        matching = [p for p in rules.prefix[resource] if name.startswith(p)]
        policy = rules.prefix[resource][max(matching, key=len)] if matching else None
    if policy is None:
        return default_allow
    if access == LIST and resource == "key" and policy == READ:
        return True
    return access in _GRANTS[policy]


@settings(max_examples=300, deadline=None)
@given(exact=st.dictionaries(NAMES, st.sampled_from(POLICIES), max_size=4),
       prefix=st.dictionaries(NAMES, st.sampled_from(POLICIES), max_size=6),
       default_allow=st.booleans(),
       queries=st.lists(st.tuples(NAMES, st.sampled_from((READ, LIST, WRITE))), min_size=1, max_size=12))
def test_lookup_matches_a_full_scan(exact: dict[str, str], prefix: dict[str, str], default_allow: bool,
                                    queries: list[tuple[str, str]]) -> None:
    rules = Rules()
    for name, pol in exact.items():
        rules.add("key", name, pol, False)
    for name, pol in prefix.items():
        rules.add("key", name, pol, True)
    authz = Authorizer(rules, default_allow)
    for _ in range(2):  # the second pass answers from the decision cache
        for name, access in queries:
            assert authz.allowed("key", name, access) == _scan(rules, default_allow, "key", name, access)


def test_longest_prefix_and_exact_rule() -> None:
    rules = Rules()
    rules.add("key", "app/", WRITE, True)
    rules.add("key", "app/ro/", READ, True)
    rules.add("key", "app/ro/x", DENY, False)
    a = Authorizer(rules, False)
    assert a.key_write("app/y") and a.key_read("app/ro/y") and not a.key_write("app/ro/y")
    assert not a.key_read("app/ro/x") and a.key_read("app/ro/xy") and not a.key_read("other")
