"""The linearizability checker on hand-made histories: it must accept the legal ones and catch the
illegal ones (stale reads, lost updates, lying CAS results)."""

from __future__ import annotations

import math
import random

from tests.kvcoord.lincheck import Op, check, check_single

INIT = (0, 10)  # value 0 at ModifyIndex 10


def read(c, call, ret, value, index, key="k"):
    return Op(c, "read", key, None, (value, index), call, ret)


def cas(c, call, ret, expected, new_value, result, key="k"):
    out = None if result is None else (("ok", result) if result else ("fail", None))
    return Op(c, "cas", key, (expected, new_value), out, call, math.inf if result is None else ret)


def test_sequential_history_is_linearizable() -> None:
    ops = [read(0, 0, 1, 0, 10), cas(0, 2, 3, 10, 1, 11), read(1, 4, 5, 1, 11), cas(1, 6, 7, 10, 2, False)]
    assert check_single(ops, INIT)[0]


def test_stale_read_after_a_completed_write_is_caught() -> None:
    ops = [cas(0, 0, 1, 10, 1, 11), read(1, 2, 3, 0, 10)]
    assert not check_single(ops, INIT)[0]


def test_concurrent_read_may_see_old_or_new() -> None:
    for seen in ((0, 10), (1, 11)):
        ops = [cas(0, 0, 5, 10, 1, 11), read(1, 1, 2, *seen)]
        assert check_single(ops, INIT)[0]


def test_two_successful_cas_from_the_same_index_is_a_lost_update() -> None:
    ops = [cas(0, 0, 3, 10, 1, 11), cas(1, 1, 4, 10, 1, 12)]
    assert not check_single(ops, INIT)[0]


def test_failed_cas_that_should_have_succeeded_is_caught() -> None:
    ops = [read(0, 0, 1, 0, 10), cas(0, 2, 3, 10, 1, False)]
    assert not check_single(ops, INIT)[0]


def test_indeterminate_cas_may_or_may_not_have_happened() -> None:
    applied = [cas(0, 0, 1, 10, 1, None), read(1, 5, 6, 1, 11), read(1, 7, 8, 1, 11)]
    assert check_single(applied, INIT)[0]
    vanished = [cas(0, 0, 1, 10, 1, None), read(1, 5, 6, 0, 10)]
    assert check_single(vanished, INIT)[0]
    flip_flop = [cas(0, 0, 1, 10, 1, None), read(1, 5, 6, 1, 11), read(1, 7, 8, 0, 10)]
    assert not check_single(flip_flop, INIT)[0]


def test_keys_are_checked_independently_and_the_bad_key_is_named() -> None:
    ops = [cas(0, 0, 1, 10, 1, 11, key="a"), read(1, 2, 3, 1, 11, key="a"),
           cas(0, 0, 1, 20, 1, 21, key="b"), read(1, 2, 3, 0, 20, key="b")]
    result = check(ops, {"a": INIT, "b": (0, 20)})
    assert not result.ok and result.key == "b"


def test_a_long_random_linearizable_history_checks_quickly() -> None:
    """Simulate 8 clients against an atomic register with overlapping intervals."""
    rng = random.Random(7)
    value, index, t = 0, 10, 0.0
    ops = []
    for _ in range(3000):
        t += rng.random()
        c = rng.randrange(8)
        call = t - rng.random() * 3          # called a little before it took effect
        ret = t + rng.random() * 3           # answered a little after
        if rng.random() < 0.5:
            ops.append(read(c, call, ret, value, index))
        else:
            expected = index if rng.random() < 0.7 else index - 1
            if expected == index:
                value, index = value + 1, index + 1
                ops.append(cas(c, call, ret, expected, value, index))
            else:
                ops.append(cas(c, call, ret, expected, value + 1, False))
    ok, steps, exhausted = check_single(ops, INIT)
    assert ok and not exhausted
    # And one corrupted read anywhere in it is found.
    bad = list(ops)
    i = next(i for i in range(1500, 3000) if bad[i].kind == "read")
    v, idx = bad[i].output
    bad[i] = read(bad[i].client, bad[i].call, bad[i].ret, v - 5, idx - 5)
    assert not check_single(bad, INIT)[0]
