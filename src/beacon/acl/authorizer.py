"""Decisions: may this token do that? Consul's policy authorizer chained onto the default policy.

For a named resource the most specific rule decides: an exact rule beats every prefix rule, else the
longest matching prefix; with no rule the default policy decides (``allow``: everything; ``deny``:
nothing). ``write`` implies ``list`` and ``read``; ``list`` implies nothing else but listing keys.
A management token is allowed everything.
"""

from __future__ import annotations

from beacon.acl.rules import DENY, LIST, READ, WRITE, Rules

_GRANTS = {READ: {READ}, LIST: {LIST}, WRITE: {READ, LIST, WRITE}, DENY: set()}


class Authorizer:
    __slots__ = ("rules", "default_allow", "management", "_prefix_lengths", "allow_all", "_decided")

    def __init__(self, rules: Rules | None, default_allow: bool, management: bool = False) -> None:
        self.rules = rules or Rules()
        self.default_allow = default_allow
        self.management = management
        # The distinct lengths of each resource's prefix rules, longest first: the longest matching
        # prefix is found with one dict lookup per length (bounded by the name's length), not by
        # scanning every rule.
        self._prefix_lengths = {res: sorted({len(p) for p in table}, reverse=True)
                                for res, table in self.rules.prefix.items()}
        # (resource, name, access) -> decision. An authorizer is cached per token until the ACL
        # tables change, and the same few names are asked about on every request.
        self._decided: dict[tuple[str, str, str], bool] = {}
        # True when no check could fail: callers may skip every check and filter.
        self.allow_all = management or (default_allow and not self._has_any_rule())

    def _has_any_rule(self) -> bool:
        return any(self.rules.exact.values()) or any(self.rules.prefix.values()) or bool(self.rules.scalar)

    def policy_for(self, resource: str, name: str) -> str | None:
        exact = self.rules.exact[resource].get(name)
        if exact is not None:
            return exact
        table = self.rules.prefix[resource]
        size = len(name)
        for length in self._prefix_lengths[resource]:
            if length <= size:
                policy = table.get(name[:length])
                if policy is not None:
                    return policy
        return None

    def allowed(self, resource: str, name: str, access: str) -> bool:
        if self.management:
            return True
        key = (resource, name, access)
        hit = self._decided.get(key)
        if hit is None:
            hit = self._decide(resource, name, access)
            if len(self._decided) >= 4096:
                self._decided.clear()  # bounded: a token reading many distinct keys
            self._decided[key] = hit
        return hit

    def _decide(self, resource: str, name: str, access: str) -> bool:
        policy = self.policy_for(resource, name)
        if policy is None:
            return self.default_allow
        if access == LIST and resource == "key" and policy == READ:
            # Consul: without enable_key_list_policy, read on a prefix allows listing under it.
            return True
        return access in _GRANTS[policy]

    def scalar(self, name: str, access: str) -> bool:
        if self.management:
            return True
        policy = self.rules.scalar.get(name)
        if policy is None:
            return self.default_allow
        return access in _GRANTS[policy]

    def key_write_prefix(self, prefix: str) -> bool:
        """Deleting a tree: write on the prefix and no narrower rule under it that withholds write."""
        if self.management:
            return True
        if not self.allowed("key", prefix, WRITE):
            return False
        for table in (self.rules.exact["key"], self.rules.prefix["key"]):
            for name, policy in table.items():
                if name.startswith(prefix) and name != prefix and policy != WRITE:
                    return False
        return True

    # Consul's named checks, for readability at call sites.
    def key_read(self, key: str) -> bool:
        return self.allowed("key", key, READ)

    def key_write(self, key: str) -> bool:
        return self.allowed("key", key, WRITE)

    def service_read(self, name: str) -> bool:
        return self.allowed("service", name, READ)

    def service_write(self, name: str) -> bool:
        return self.allowed("service", name, WRITE)

    def node_read(self, name: str) -> bool:
        return self.allowed("node", name, READ)

    def intention_read(self, name: str) -> bool:
        return self.allowed("intention", name, READ)

    def intention_write(self, name: str) -> bool:
        return self.allowed("intention", name, WRITE)

    def node_write(self, name: str) -> bool:
        return self.allowed("node", name, WRITE)


def management() -> Authorizer:
    return Authorizer(None, True, management=True)
