"""The layers hold (pure AST, no imports of the code under test):

* HTTP handlers (``beacon/agent/http``) parse and render: they build no command (no record from
  ``beacon.server.commands``, no ``MessageType``, no ``{"op": ...}`` payload) and submit nothing
  themselves; endpoints (``beacon/endpoints``) do.
* Domain modules raise domain errors (``beacon.errors``): none imports ``aiohttp.web``, names an
  HTTP error type (``HTTPError``, ``web.HTTP*``) or gives an exception a ``status``.
* No module reaches into another object's private members: ``obj._name`` is allowed on ``self`` and
  ``cls``, on the module's own top-level objects, and for names defined in the same module (Python's
  module-private convention); the rest is listed in ALLOWED with the reason.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "beacon"

HANDLERS = "agent/http"
# Domain packages and modules: everything below the HTTP layer.
DOMAIN = ("server", "endpoints", "acl", "checks", "gossip", "dns", "errors.py", "model.py",
          "agent/checking.py", "agent/local.py", "agent/reconcile.py")
# The composition root builds the web app (it imports aiohttp.web for the runner) but raises no
# HTTP error either.
NO_HTTP_ERRORS = (*DOMAIN, "agent/agent.py")

# (module, "expression") -> why it is needed. Keep it short.
ALLOWED: dict[tuple[str, str], str] = {
    ("agent/http/metrics.py", "telemetry.HTTP_LATENCY._upper_bounds"):
        "prometheus_client has no public read of a live histogram's bounds (collect() allocates per scrape)",
    ("agent/http/metrics.py", "hist._sum"): "same: prometheus_client histogram internals",
    ("agent/http/metrics.py", "hist._buckets"): "same: prometheus_client histogram internals",
    ("agent/http/views.py", "agent._views"):
        "the views cache hangs off the agent; views.py is the HTTP hot path's file (perf-http branch)",
    ("agent/http/metrics.py", "request._match_info"):
        "the one request handler sets a request's route as aiohttp's Application._handle does; no public setter",
    ("agent/agent.py", "self.forward_session._retry_connection"):
        "aiohttp has no public switch for its one automatic resend of a PUT/DELETE; a Consul write is not idempotent",
    ("cli/flags.py", "p._actions"): "argparse has no public list of a parser's actions",
    ("runtime/_init.py", "os._exit"): "public stdlib API despite the underscore",
}


def modules(*under: str, root: Path = SRC) -> Iterator[tuple[str, ast.Module]]:
    for rel in under:
        path = root / rel
        files = [path] if path.suffix == ".py" else sorted(path.rglob("*.py"))
        for f in files:
            yield f.relative_to(root).as_posix(), ast.parse(f.read_text(), str(f))


def test_handlers_build_no_commands_and_submit_nothing() -> None:
    bad: list[str] = []
    for rel, tree in modules(HANDLERS):
        for node in ast.walk(tree):
            where = f"{rel}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom) and node.module in ("beacon.server.commands", "beacon.server.fsm"):
                names = {a.name for a in node.names}
                if node.module == "beacon.server.commands" or "MessageType" in names:
                    bad.append(f"{where}: imports command records ({', '.join(sorted(names))})")
            elif isinstance(node, ast.Name) and node.id == "MessageType":
                bad.append(f"{where}: names MessageType")
            elif isinstance(node, ast.Dict) and any(
                    isinstance(k, ast.Constant) and k.value == "op" for k in node.keys):
                bad.append(f"{where}: builds an {{'op': ...}} command payload")
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr in ("submit", "apply")
                  and not (isinstance(node.func.value, ast.Name) and node.func.value.id.endswith("_endpoint"))):
                bad.append(f"{where}: calls .{node.func.attr}() directly (go through beacon.endpoints)")
    assert not bad, "\n".join(bad)


def test_domain_modules_know_nothing_of_http() -> None:
    bad: list[str] = []
    for rel, tree in modules(*DOMAIN):
        for node in ast.walk(tree):
            where = f"{rel}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom) and node.module == "aiohttp" and any(
                    a.name == "web" for a in node.names):
                bad.append(f"{where}: imports aiohttp.web")
            elif isinstance(node, ast.Import) and any(a.name == "aiohttp.web" for a in node.names):
                bad.append(f"{where}: imports aiohttp.web")
            elif isinstance(node, ast.ImportFrom) and node.module == "beacon.agent.http.core":
                bad.append(f"{where}: imports the HTTP core")
    for rel, tree in modules(*NO_HTTP_ERRORS):
        for node in ast.walk(tree):
            where = f"{rel}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Name) and node.id == "HTTPError":
                bad.append(f"{where}: names HTTPError (raise a beacon.errors domain error)")
            elif isinstance(node, ast.Attribute) and node.attr.startswith("HTTP") and isinstance(
                    node.value, ast.Name) and node.value.id == "web":
                bad.append(f"{where}: names web.{node.attr}")
            elif isinstance(node, ast.ClassDef) and any(
                    isinstance(b, ast.Name) and (b.id.endswith(("Error", "Exception")) or b.id == "Exception")
                    for b in node.bases):
                # An int status is an HTTP status (a check's status is a string, and allowed).
                for sub in ast.walk(node):
                    if (isinstance(sub, ast.arg | ast.AnnAssign) and _int_status(sub)):
                        bad.append(f"{where}: exception {node.name} carries an HTTP status")
    assert not bad, "\n".join(bad)


def _int_status(node: ast.arg | ast.AnnAssign) -> bool:
    name = node.arg if isinstance(node, ast.arg) else ast.unparse(node.target)
    ann = node.annotation
    return (name.removeprefix("self.") in ("status", "status_code") and ann is not None
            and ast.unparse(ann).startswith("int"))


def _defined_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """Names this module defines (functions, classes, attributes set on self, assignments) and its
    top-level variables."""
    defined: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
              and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            defined.add(node.attr)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined.update(t.id for t in targets if isinstance(t, ast.Name))
    top = {t.id for stmt in tree.body if isinstance(stmt, ast.Assign | ast.AnnAssign)
           for t in (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]) if isinstance(t, ast.Name)}
    return defined, top


def private_reaches(root: Path = SRC) -> list[tuple[str, int, str]]:
    out = []
    for rel, tree in modules(".", root=root):
        defined, top = _defined_names(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and (owner.id in ("self", "cls") or owner.id in top):
                continue
            if node.attr in defined:
                continue
            out.append((rel, node.lineno, ast.unparse(node)))
    return out


def test_no_module_reaches_into_another_objects_private_members() -> None:
    found = private_reaches()
    bad = [f"{rel}:{line}: {expr}" for rel, line, expr in found if (rel, expr) not in ALLOWED]
    assert not bad, "\n".join(bad)
    # An entry nothing needs any more goes.
    stale = set(ALLOWED) - {(rel, expr) for rel, _, expr in found}
    assert not stale, f"stale allow-list entries: {sorted(stale)}"


@pytest.mark.parametrize("source, expected", [
    ("class A:\n    def f(self, other):\n        return other._secret\n", ["other._secret"]),
    ("class A:\n    def _mine(self):\n        pass\n\ndef g(a):\n    return a._mine()\n", []),
    ("_state = object()\n\ndef g():\n    return _state._x\n", []),
])
def test_the_private_rule_itself(source: str, expected: list[str], tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(source)
    assert [expr for _, _, expr in private_reaches(tmp_path)] == expected
