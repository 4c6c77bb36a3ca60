"""`beacon <command> ...`: dispatch to one module per command group.

Each command is ``module:function`` taking the remaining argv and returning an exit code. Modules are
imported lazily so `beacon kv get` does not pay for the agent's imports.
"""

from __future__ import annotations

import difflib
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "keygen": ("beacon.cli.cluster_cmds:run_keygen", "Generate a cluster key for -encrypt"),
    "join": ("beacon.cli.cluster_cmds:run_join", "Tell an agent to join a cluster"),
    "leave": ("beacon.cli.cluster_cmds:run_leave", "Gracefully leave the cluster and stop the agent"),
    "reload": ("beacon.cli.cluster_cmds:run_reload", "Re-read the agent's config files (services, checks)"),
    "force-leave": ("beacon.cli.cluster_cmds:run_force_leave", "Force a failed member into the left state"),
    "operator": ("beacon.cli.cluster_cmds:run_operator", "Operator commands (operator raft list-peers|remove-peer, operator autopilot get-config|set-config)"),
    "keyring": ("beacon.cli.gossip_cmds:run_keyring", "List, install, use or remove gossip encryption keys"),
    "rtt": ("beacon.cli.gossip_cmds:run_rtt", "Estimate the round trip time between two nodes"),
    "event": ("beacon.cli.gossip_cmds:run_event", "Fire a user event"),
    "agent": ("beacon.cli.agent", "Run a Beacon agent (-dev for a one-process cluster)"),
    "members": ("beacon.cli.members", "List the cluster's members"),
    "kv": ("beacon.cli.kv", "Read and write the KV store (get, put, delete)"),
    "config": ("beacon.cli.config", "Write, read, list and delete config entries (JSON files)"),
    "intention": ("beacon.cli.intention", "Create, check, list, match and delete service intentions"),
    "catalog": ("beacon.cli.catalog", "List catalog services and nodes"),
    "services": ("beacon.cli.services", "Register and deregister services on the local agent"),
    "version": ("beacon.cli.version", "Print the version"),
    "lock": ("beacon.cli.lock", "Run a command while holding a lock or semaphore slot in the KV store"),
    "watch": ("beacon.cli.watch", "Run a handler on every change of a KV, catalog or event view"),
    "snapshot": ("beacon.cli.snapshot", "Save, restore or inspect a snapshot of the whole state"),
    "engine": ("beacon.cli.engine", "Run only the embedded container engine (Docker Engine API)"),
    "registrator": ("beacon.cli.registrator", "Register published container ports in a Consul-compatible agent"),
    "containers": ("beacon.cli.containers", "Container commands: run, ps, stop, rm, logs, exec"),
    "run": ("beacon.cli.run", "Run a container on the embedded engine (docker run flags)"),
    "ps": ("beacon.cli.ps", "List containers of the embedded engine"),
    "stop": ("beacon.cli.stop", "Stop containers"),
    "rm": ("beacon.cli.rm", "Remove containers"),
    "logs": ("beacon.cli.logs", "Print a container's logs"),
    "exec": ("beacon.cli.exec", "Run a command in a running container"),
    "tls": ("beacon.cli.tls", "Create a CA and agent certificates (tls ca create, tls cert create)"),
    "acl": ("beacon.cli.acl", "Bootstrap ACLs and manage tokens, policies and roles"),
    "login": ("beacon.cli.login:run_login", "Trade a bearer token (JWT) for an ACL token via an auth method"),
    "logout": ("beacon.cli.login:run_logout", "Delete an ACL token created by login"),
}


def register_command(name: str, module: str, summary: str) -> None:
    COMMANDS[name] = (module, summary)


def _usage() -> str:
    lines = ["Usage: beacon <command> [args]", "", "Commands:"]
    for name, (_, summary) in sorted(COMMANDS.items()):
        lines.append(f"    {name:<12} {summary}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "-help", "help"):
        print(_usage())
        return 0 if args else 1
    if args[0] in ("-v", "--version", "-version"):
        args[0] = "version"
    entry = COMMANDS.get(args[0])
    if entry is None:
        near = difflib.get_close_matches(args[0], list(COMMANDS), n=1, cutoff=0.6)
        hint = f"\nDid you mean 'beacon {near[0]}'?" if near else f"\n\n{_usage()}"
        print(f"Unknown command: {args[0]!r}{hint}", file=sys.stderr)
        return 1
    module_name, _, func = entry[0].partition(":")
    module = importlib.import_module(module_name)
    try:
        return int(getattr(module, func or "run")(args[1:]) or 0)
    except KeyboardInterrupt:
        return 130
