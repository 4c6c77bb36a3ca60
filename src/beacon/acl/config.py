"""The agent's ``acl`` block (Consul's keys) -> :class:`~beacon.acl.resolver.ACLConfig`.

``tokens`` takes the current names (``initial_management``, ``agent``, ``agent_recovery``,
``default``, ``dns`` (what DNS answers with, before ``default``), ``replication``) and the legacy ones (``master`` -> ``initial_management``,
``agent_master`` -> ``agent_recovery``); the pre-1.4 top-level keys are not supported.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from beacon.acl.resolver import DOWN_POLICIES, ACLConfig

if TYPE_CHECKING:
    from beacon.config import AgentConfig

TOKEN_NAMES = {"initial_management": "initial_management", "master": "initial_management",
               "agent": "agent", "agent_recovery": "agent_recovery", "agent_master": "agent_recovery",
               "default": "default", "dns": "dns", "replication": "replication",
               "config_file_service_registration": "config_file_service_registration"}
log = logging.getLogger("beacon.config")
KEYS = ("enabled", "default_policy", "down_policy", "token_ttl", "policy_ttl", "role_ttl",
        "enable_token_persistence", "enable_token_replication", "enable_key_list_policy", "tokens")


def _error(message: str) -> Exception:
    from beacon.config import ConfigError

    return ConfigError(message)


def merge_acl_block(into: dict[str, Any], block: dict[str, Any], src: str) -> None:
    for key, value in block.items():
        if key not in KEYS:
            log.warning("%s: unknown key 'acl.%s' ignored", src, key)  # as the rest of the config does
            continue
        if key == "tokens":
            if not isinstance(value, dict):
                raise _error(f"{src}: 'acl.tokens' must be an object")
            for name, tok in value.items():
                if name not in TOKEN_NAMES:
                    log.warning("%s: unknown key 'acl.tokens.%s' ignored", src, name)
                    continue
                if not isinstance(tok, str):
                    raise _error(f"{src}: 'acl.tokens.{name}' must be a string")
                into.setdefault("tokens", {})[TOKEN_NAMES[name]] = tok
        else:
            into[key] = value


def acl_config(cfg: AgentConfig) -> ACLConfig:
    from beacon.durations import parse_duration

    raw = cfg.acl
    enabled = raw.get("enabled", False)
    if not isinstance(enabled, bool):
        raise _error(f"'acl.enabled' must be a boolean, got {enabled!r}")
    default = raw.get("default_policy", "allow")
    if default not in ("allow", "deny"):
        raise _error(f"'acl.default_policy' must be allow or deny, got {default!r}")
    down = raw.get("down_policy", "extend-cache")
    if down not in DOWN_POLICIES:
        raise _error(f"'acl.down_policy' must be one of {', '.join(DOWN_POLICIES)}, got {down!r}")
    ttl_raw = raw.get("token_ttl", "30s")
    try:
        ttl = parse_duration(ttl_raw) if isinstance(ttl_raw, str) else float(ttl_raw)
    except (TypeError, ValueError) as exc:
        raise _error(f"'acl.token_ttl': {exc}") from None
    persist = raw.get("enable_token_persistence", False)
    if not isinstance(persist, bool):
        raise _error(f"'acl.enable_token_persistence' must be a boolean, got {persist!r}")
    return ACLConfig(enabled=enabled, default_policy=default, down_policy=down, token_ttl=ttl,
                     enable_token_persistence=persist, tokens=dict(raw.get("tokens", {})))
