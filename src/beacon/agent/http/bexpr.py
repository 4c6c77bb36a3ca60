"""The `?filter` expression language (HashiCorp go-bexpr), evaluated on response JSON objects.

Grammar::

    expr    := and ("or" and)*
    and     := unary ("and" unary)*
    unary   := "not" unary | "(" expr ")" | match
    match   := sel ("==" | "!=") value | sel "is" ["not"] "empty"
             | value ["not"] "in" sel | sel ["not"] ("contains" | "matches") value
    sel     := ident ("." ident | "[" string "]")*

Selectors are paths over the JSON object a list endpoint returns (``Service.Tags``, ``Meta.env``,
``Meta["key-with-dash"]``). A path through a list collects every element's value; ``==`` then holds if
any element matches, as go-bexpr does for collections.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

ERROR_PREFIX = "Failed to create boolean expression evaluator: "

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<op>==|!=|\(|\)|\[|\]|\.)
  | (?P<dq>"(?:[^"\\]|\\.)*")
  | (?P<bq>`[^`]*`)
  | (?P<num>-?\d+(?:\.\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_\-/]*)
""", re.VERBOSE)

_MISSING = object()


class FilterError(ValueError):
    pass


def _tokenize(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise FilterError(f"{ERROR_PREFIX}1:{pos + 1}: unexpected character {text[pos]!r}")
        kind = m.lastgroup or ""
        if kind != "ws":
            val = m.group()
            if kind == "dq":
                val = bytes(val[1:-1], "utf-8").decode("unicode_escape")
                kind = "str"
            elif kind == "bq":
                val = val[1:-1]
                kind = "str"
            out.append((kind, val))
        pos = m.end()
    return out


Pred = Callable[[Any], bool]


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokenize(text)
        self.i = 0
        self.paths: list[list[str]] = []  # every selector the expression reads, in order

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        j = self.i + offset
        return self.toks[j] if j < len(self.toks) else None

    def word(self, offset: int = 0) -> str | None:
        t = self.peek(offset)
        return t[1].lower() if t and t[0] == "ident" else None

    def take(self) -> tuple[str, str]:
        t = self.peek()
        if t is None:
            raise FilterError(f"{ERROR_PREFIX}unexpected end of expression")
        self.i += 1
        return t

    def expect(self, kind: str, val: str | None = None) -> tuple[str, str]:
        t = self.take()
        if t[0] != kind or (val is not None and t[1] != val):
            raise FilterError(f"{ERROR_PREFIX}expected {val or kind}, found {t[1]!r}")
        return t

    def parse(self) -> Pred:
        if not self.toks:
            raise FilterError(f"{ERROR_PREFIX}empty expression")
        pred = self.expr()
        if self.peek() is not None:
            raise FilterError(f"{ERROR_PREFIX}unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return pred

    def expr(self) -> Pred:
        left = self.conj()
        while self.word() == "or":
            self.take()
            right = self.conj()
            left = (lambda a, b: lambda o: a(o) or b(o))(left, right)
        return left

    def conj(self) -> Pred:
        left = self.unary()
        while self.word() == "and":
            self.take()
            right = self.unary()
            left = (lambda a, b: lambda o: a(o) and b(o))(left, right)
        return left

    def unary(self) -> Pred:
        if self.word() == "not":
            self.take()
            inner = self.unary()
            return lambda o: not inner(o)
        t = self.peek()
        if t == ("op", "("):
            self.take()
            inner = self.expr()
            self.expect("op", ")")
            return inner
        return self.match()

    def selector(self) -> list[str]:
        kind, val = self.take()
        if kind != "ident":
            raise FilterError(f"{ERROR_PREFIX}expected a selector, found {val!r}")
        path = [val]
        while True:
            t = self.peek()
            if t == ("op", "."):
                self.take()
                path.append(self.expect("ident")[1])
            elif t == ("op", "["):
                self.take()
                path.append(self.expect("str")[1])
                self.expect("op", "]")
            else:
                self.paths.append(path)
                return path

    def value(self) -> str:
        kind, val = self.take()
        if kind in ("str", "num", "ident"):
            return val
        raise FilterError(f"{ERROR_PREFIX}expected a value, found {val!r}")

    def match(self) -> Pred:
        t = self.peek()
        # value [not] in selector
        if t is not None and t[0] in ("str", "num") or (
                t is not None and t[0] == "ident" and self.word(1) in ("in", "not")
                and (self.word(1) == "in" or self.word(2) == "in")):
            val = self.value()
            neg = False
            if self.word() == "not":
                self.take()
                neg = True
            if self.word() != "in":
                raise FilterError(f"{ERROR_PREFIX}expected 'in'")
            self.take()
            path = self.selector()
            return lambda o: _contains(_select(o, path), val) != neg
        path = self.selector()
        w = self.word()
        t = self.peek()
        if t == ("op", "==") or t == ("op", "!="):
            self.take()
            val = self.value()
            eq = t[1] == "=="
            return lambda o: _equals(_select(o, path), val) == eq
        if w == "is":
            self.take()
            neg = False
            if self.word() == "not":
                self.take()
                neg = True
            if self.word() != "empty":
                raise FilterError(f"{ERROR_PREFIX}expected 'empty'")
            self.take()
            return lambda o: _empty(_select(o, path)) != neg
        neg = False
        if w == "not":
            self.take()
            neg = True
            w = self.word()
        if w == "contains":
            self.take()
            val = self.value()
            return lambda o: _contains(_select(o, path), val) != neg
        if w == "matches":
            self.take()
            val = self.value()
            try:
                rx = re.compile(val)
            except re.error as exc:
                raise FilterError(f"{ERROR_PREFIX}invalid regular expression {val!r}: {exc}") from exc
            return lambda o: _matches(_select(o, path), rx) != neg
        raise FilterError(f"{ERROR_PREFIX}expected an operator after {'.'.join(path)}")


def _select(obj: Any, path: list[str]) -> Any:
    cur: Any = obj
    for i, part in enumerate(path):
        if isinstance(cur, list):
            vals = []
            for item in cur:
                v = _select(item, path[i:])
                if isinstance(v, list):
                    vals.extend(v)
                elif v is not _MISSING:
                    vals.append(v)
            return vals
        if not isinstance(cur, dict):
            return _MISSING
        if part in cur:
            cur = cur[part]
            continue
        low = part.lower()
        for k in cur:
            if k.lower() == low:
                cur = cur[k]
                break
        else:
            return _MISSING
    return cur


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _equals(v: Any, val: str) -> bool:
    if v is _MISSING or v is None:
        return val == ""
    if isinstance(v, list):
        return any(_text(x) == val for x in v)
    return _text(v) == val


def _contains(v: Any, val: str) -> bool:
    if isinstance(v, list):
        return any(_text(x) == val for x in v)
    if isinstance(v, dict):
        return val in v
    if isinstance(v, str):
        return val in v
    return False


def _empty(v: Any) -> bool:
    return v is _MISSING or v is None or (hasattr(v, "__len__") and len(v) == 0)


def _matches(v: Any, rx: re.Pattern[str]) -> bool:
    if isinstance(v, list):
        return any(rx.search(_text(x)) for x in v)
    if v is _MISSING or v is None:
        return False
    return rx.search(_text(v)) is not None


def compile_filter(text: str) -> Pred:
    return _Parser(text).parse()


def selectors(text: str) -> list[list[str]]:
    """The selector paths an expression reads (``a.b["c"]`` -> ``["a", "b", "c"]``); it must parse."""
    parser = _Parser(text)
    parser.parse()
    return parser.paths
