"""The agent's TLS and ACL wiring: the HTTPS listener, how a client agent reaches servers (HTTPS
when ``verify_outgoing``), and the token resolver (local on servers, asked of a server on clients).

Kept apart from :mod:`beacon.agent.agent` so that the agent only calls :func:`setup`,
:func:`install_http`, :func:`start_https` and :func:`server_api_targets`.
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any

from aiohttp import web

from beacon.acl.config import acl_config
from beacon.acl.resolver import ACLNotFound, Resolver
from beacon.tls.config import tls_config

if TYPE_CHECKING:
    from beacon.agent.agent import Agent

log = logging.getLogger("beacon.agent.security")
TOKENS_FILE = "acl-tokens.json"


def setup(agent: Agent) -> None:
    cfg = agent.config
    agent.tls = tls_config(cfg)
    agent.https_port = None
    agent.https_server = None
    agent.outgoing_ssl = agent.tls.client_context() if agent.tls.verify_outgoing else None
    acl = acl_config(cfg)
    if not acl.enabled:
        agent.acl = None
        return
    client = not (cfg.server or cfg.dev)
    # A server of a secondary datacenter asks the primary's servers for tokens it does not hold.
    secondary = cfg.server and not cfg.dev and (cfg.primary_datacenter or cfg.datacenter) != cfg.datacenter
    agent.acl = Resolver(acl, cfg.node_name, store=agent.store,
                         fetch=(lambda secret: fetch_from_server(agent, secret)) if client else None,
                         primary=(lambda secret: fetch_from_primary(agent, secret)) if secondary else None)
    if acl.enable_token_persistence and cfg.data_dir:
        agent.acl.tokens.update(load_persisted_tokens(cfg.data_dir))


async def write_initial_management(agent: Agent) -> None:
    """Servers: once this one leads, store the configured initial_management token (as Consul's
    leader does), so it is listed, readable through token/self, and bootstrap is over."""
    import asyncio
    import datetime as dt

    from beacon.acl import state
    from beacon.acl.resolver import initial_accessor, initial_management_token
    from beacon.server.commands import ACLInitialManagement

    secret = agent.acl.tokens.get("initial_management") if agent.acl is not None else None
    if not secret or not (agent.config.server or agent.config.dev):
        return
    while initial_accessor(secret) not in state.table(agent.store, state.TOKENS):
        if agent.consensus.is_leader():
            created = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
            try:
                await agent.submit(ACLInitialManagement(token=initial_management_token(secret, created)))
            except Exception as exc:  # no quorum yet: the next round tries again
                log.debug("initial management token not written yet: %s", exc)
        await asyncio.sleep(1.0)


async def reap_expired_tokens(agent: Agent) -> None:
    """Servers with ACLs: the leader deletes expired tokens every 30 s (login tokens expire)."""
    if agent.acl is None or not (agent.config.server or agent.config.dev):
        return
    from beacon.acl import reaper

    await reaper.run(agent.store, agent.submit, agent.consensus.is_leader)


def load_persisted_tokens(data_dir: str) -> dict[str, str]:
    path = os.path.join(data_dir, TOKENS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring persisted ACL tokens in %s: %s", path, exc)
        return {}
    return {k: v for k, v in doc.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(doc, dict) \
        else {}


def persist_tokens(agent: Agent) -> None:
    """enable_token_persistence: tokens set through /v1/agent/token survive a restart (0600 file)."""
    if agent.acl is None or not agent.acl.config.enable_token_persistence or not agent.config.data_dir:
        return
    path = os.path.join(agent.config.data_dir, TOKENS_FILE)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(agent.acl.tokens, f)
    os.replace(tmp, path)


def dns_store(agent: Agent) -> Any:
    """What the DNS server reads: the store, or with ACLs what the agent's DNS token (``dns``, else
    ``default``, else anonymous) may see."""
    if agent.acl is None:
        return agent.store
    from beacon.acl.dns_view import ACLStore

    return ACLStore(agent.store, agent.acl)


def install_http(agent: Agent, app: web.Application) -> None:
    from beacon.agent.http import acl, acl_auth, acl_enforce

    if agent.acl is None:
        # ACLs off: no middleware on the hot path, only Consul's 401 on the ACL endpoints.
        for path in ("/v1/acl/{tail:.*}", "/v1/agent/token/{tail:.*}"):
            app.router.add_route("*", path, acl_enforce.acl_disabled)
        return
    # Enforcement itself runs in the agent's one API layer (metrics.api_handler -> acl_enforce.enforcer).
    acl.agent_router.install(app)
    if agent.mode != "client":
        acl.router.install(app)  # clients forward /v1/acl/* to a server
        acl_auth.router.install(app)  # auth methods, binding rules, login/logout


async def start_https(agent: Agent, runner: web.AppRunner, guard: Any) -> None:
    """The same app, behind the same connection guard, on ports.https with the TLS context."""
    from beacon.agent.agent import ListenError, bind_tcp, listen_error
    from beacon.agent.http import limits

    cfg = agent.config
    if cfg.https_port < 0:
        return
    try:
        sock = bind_tcp(cfg.http_bind, cfg.https_port)
    except ListenError:
        raise
    except OSError as exc:
        raise ListenError(exc.errno, listen_error("HTTPS API", "tcp", cfg.http_bind, cfg.https_port, exc)) from None
    agent.https_port = sock.getsockname()[1]
    agent.https_server = await limits.serve(runner, sock, guard, ssl_context=agent.tls.server_context())


def stop_https(agent: Agent) -> None:
    if agent.https_server is not None:
        agent.https_server.close()
        agent.https_server = None


def server_api_targets(agent: Agent) -> list[tuple[str, dict[str, Any]]]:
    """(base URL, request options) per server a client forwards to: HTTPS with verify_outgoing."""
    if agent.outgoing_ssl is None:
        return [(f"http://{t}", {}) for t in agent.server_http_targets()]

    opts: dict[str, Any] = {"ssl": agent.outgoing_ssl}
    if agent.tls.verify_server_hostname:
        opts["server_hostname"] = agent.tls.server_name
    if agent.cluster is None:
        return []
    leader = agent.cluster.leader_name
    out = []
    for m in sorted(agent.cluster.servers(), key=lambda m: m.name != leader):  # gossip tags name the port
        port = int(m.tags.get("https_port") or 0)
        if port:
            host = f"[{m.addr}]" if ":" in m.addr else m.addr
            out.append((f"https://{host}:{port}", opts))
    return out


async def fetch_from_primary(agent: Agent, secret: str, path: str = "/v1/internal/acl/resolve") -> Any:
    """A secondary datacenter's server: ask the primary datacenter's servers (nearest first, over
    the WAN pool as ``?dc=`` requests go) what a SecretID it does not hold grants (or, with
    ``path``, another read of that token's own, such as ``/v1/acl/token/self``)."""
    import aiohttp

    from beacon.agent.http.federation import remote_servers

    if agent.forward_session is None:
        raise RuntimeError("not started")
    primary = agent.config.primary_datacenter
    opts = {"timeout": aiohttp.ClientTimeout(total=5)}
    targets = [(f"http://[{m.addr}]:{port}" if ":" in m.addr else f"http://{m.addr}:{port}", opts)
               for m in await remote_servers(agent, primary) if (port := int(m.tags.get("http_port") or 0))]
    return await _resolve_at(agent, targets, secret, f"no server of the primary datacenter {primary} is known",
                             path)


async def fetch_from_server(agent: Agent, secret: str) -> dict[str, Any]:
    """A client agent's token lookup: ask a server for what the SecretID grants."""
    if agent.forward_session is None:
        raise RuntimeError("not connected to any server yet")
    return await _resolve_at(agent, server_api_targets(agent), secret, "no servers known")


async def _resolve_at(agent: Agent, targets: list[tuple[str, dict[str, Any]]], secret: str,
                      last: str, path: str = "/v1/internal/acl/resolve") -> Any:
    """The first answer of ``path`` (a GET under ``secret``) among ``targets``; 403 is ACLNotFound."""
    headers = {"X-Consul-Token": secret} if secret else {}
    for base, opts in targets:
        try:
            async with agent.forward_session.get(f"{base}{path}", headers=headers, **opts) as resp:
                body = await resp.read()
                if resp.status == 403:
                    raise ACLNotFound()
                if resp.status == 200:
                    return json.loads(body)
                last = f"{base}: {resp.status} {body[:200].decode(errors='replace')}"
        except ACLNotFound:
            raise
        except Exception as exc:  # OSError, ssl.SSLError, a bad body, aiohttp.ClientError: the next one
            last = f"{base}: {exc or type(exc).__name__}"
    raise RuntimeError(last)
