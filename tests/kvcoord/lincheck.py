"""A small linearizability checker for KV register histories (Wing & Gong's search with Lowe's
memoization of (linearized set, state), as in Porcupine).

No PyPI package fits (the known checkers are Knossos in Clojure and Porcupine in Go), so this is
written here and tested in ``test_lincheck.py`` on hand-made histories, both linearizable and not.

Histories are partitioned by key (P-compositionality: a history of independent registers is
linearizable iff each key's sub-history is), which keeps the search small.

The model is one KV key as Consul exposes it: state ``(value, modify_index)``.

* ``read``  output ``(value, index)``: legal iff both match the state (an index of ``None`` in the
  state, left by a CAS whose new index is unknown, matches any index and is learned from the read).
* ``cas``   input ``(expected_index, new_value)``; output ``("ok", new_index)`` legal iff the state's
  index is the expected one; ``("fail", None)`` legal iff it is not.
* An operation with no response (timeout, connection lost, 5xx) is *indeterminate*: its return time
  is infinity, so the search may linearize it anywhere after its call, including after everything
  else (which is the same as "it never happened"). Indeterminate CAS applies iff its index matches.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

State = tuple[Any, Any]


@dataclass(slots=True)
class Op:
    client: int
    kind: str            # "read" | "cas"
    key: str
    input: Any           # cas: (expected_index, new_value)
    output: Any          # read: (value, index); cas: ("ok", new_index) | ("fail", None); None if unknown
    call: float
    ret: float = math.inf   # math.inf: no response (indeterminate)

    @property
    def indeterminate(self) -> bool:
        return self.ret == math.inf


def step(state: State, op: Op) -> tuple[bool, State]:
    value, index = state
    if op.kind == "read":
        if op.output is None:
            return True, state
        rv, ri = op.output
        if rv != value or (index is not None and ri != index):
            return False, state
        return True, (rv, ri)
    expected, new_value = op.input
    matches = index is None or index == expected
    if op.output is None:                    # indeterminate: applied iff it could have been
        return True, ((new_value, None) if matches else state)
    verdict, new_index = op.output
    if verdict == "ok":
        if not matches:
            return False, state
        return True, (new_value, new_index)
    if index is not None and index == expected:
        return False, state                  # a CAS that should have succeeded reported failure
    return True, state


@dataclass(eq=False, slots=True)
class _Entry:
    op_id: int
    is_call: bool
    time: float
    match: _Entry | None = None
    prev: _Entry | None = None
    next: _Entry | None = None


@dataclass
class CheckResult:
    ok: bool
    key: str = ""
    steps: int = 0
    exhausted: bool = False
    detail: str = ""
    per_key_ops: dict[str, int] = field(default_factory=dict)


def _build(ops: list[Op]) -> _Entry:
    events: list[tuple[float, int, int, bool]] = []
    for i, op in enumerate(ops):
        # At equal times a call sorts before a return: treat touching operations as concurrent,
        # which can only make the checker more permissive, never report a false violation.
        events.append((op.call, 0, i, True))
        events.append((op.ret, 1, i, False))
    events.sort()
    head = _Entry(-1, False, -math.inf)
    calls: dict[int, _Entry] = {}
    prev = head
    for t, _, i, is_call in events:
        e = _Entry(i, is_call, t)
        if is_call:
            calls[i] = e
        else:
            calls[i].match = e
        prev.next = e
        e.prev = prev
        prev = e
    return head


def _lift(e: _Entry) -> None:
    assert e.prev is not None and e.match is not None
    e.prev.next = e.next
    if e.next is not None:
        e.next.prev = e.prev
    m = e.match
    assert m.prev is not None
    m.prev.next = m.next
    if m.next is not None:
        m.next.prev = m.prev


def _unlift(e: _Entry) -> None:
    m = e.match
    assert m is not None and m.prev is not None and e.prev is not None
    m.prev.next = m
    if m.next is not None:
        m.next.prev = m
    e.prev.next = e
    if e.next is not None:
        e.next.prev = e


def check_single(ops: list[Op], initial: State, max_steps: int = 5_000_000) -> tuple[bool, int, bool]:
    """(linearizable, steps, exhausted) for one key's history."""
    if not ops:
        return True, 0, False
    head = _build(ops)
    state = initial
    linearized = 0
    cache: set[tuple[int, State]] = set()
    stack: list[tuple[_Entry, State]] = []
    entry = head.next
    steps = 0
    while head.next is not None:
        steps += 1
        if steps > max_steps:
            return False, steps, True
        assert entry is not None
        if entry.is_call:
            op = ops[entry.op_id]
            ok, new_state = step(state, op)
            if ok:
                new_lin = linearized | (1 << entry.op_id)
                if (new_lin, new_state) not in cache:
                    cache.add((new_lin, new_state))
                    stack.append((entry, state))
                    state = new_state
                    linearized = new_lin
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            if not stack:
                return False, steps, False
            entry, state = stack.pop()
            linearized &= ~(1 << entry.op_id)
            _unlift(entry)
            entry = entry.next
    return True, steps, False


def check(ops: Iterable[Op], initial: dict[str, State], max_steps: int = 5_000_000) -> CheckResult:
    """Check a whole history, key by key. `initial` gives each key's state before the history."""
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    total = 0
    counts = {k: len(v) for k, v in by_key.items()}
    for key in sorted(by_key):
        ok, steps, exhausted = check_single(by_key[key], initial.get(key, (None, 0)), max_steps)
        total += steps
        if not ok:
            why = "search budget exhausted" if exhausted else "no linearization exists"
            return CheckResult(False, key, total, exhausted, f"key {key!r}: {why}", counts)
    return CheckResult(True, "", total, False, "", counts)
