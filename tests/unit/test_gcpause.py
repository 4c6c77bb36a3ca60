"""The collector pause nests, restores the collector's prior state, and survives errors."""

from __future__ import annotations

import gc

import pytest

from beacon.server import gcpause


def test_nested_pauses_resume_once_at_the_outermost() -> None:
    assert gc.isenabled()
    with gcpause.paused():
        assert not gc.isenabled()
        with gcpause.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner end does not resume it
    assert gc.isenabled()


def test_an_error_inside_still_resumes() -> None:
    with pytest.raises(ValueError), gcpause.paused():
        raise ValueError("boom")
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    try:
        with gcpause.paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_what_a_pause_builds_is_frozen_not_walked() -> None:
    gc.unfreeze()
    try:
        with gcpause.paused():
            built = [{"n": [i]} for i in range(1000)]
        # Out of every collection's sight, so no young collection walks the 2,000 containers...
        assert gc.get_freeze_count() >= 2000
        assert gc.get_count()[0] < 1000
        # ...and still freed by reference counting.
        del built
    finally:
        gc.unfreeze()


def test_an_expensive_full_collection_freezes_its_survivors(monkeypatch: pytest.MonkeyPatch) -> None:
    before = gc.get_threshold()
    gc.unfreeze()
    gcpause.install_freezer()
    try:
        monkeypatch.setattr(gcpause, "FREEZE_AFTER", 10.0)  # armed but not expensive enough: nothing frozen
        gc.collect()
        assert gc.get_freeze_count() == 0
        monkeypatch.setattr(gcpause, "FREEZE_AFTER", 0.0)
        kept = [[i] for i in range(1000)]
        gc.collect()
        assert gc.get_freeze_count() >= len(kept)
        assert gc.get_threshold()[2] == gcpause.FULL_EVERY
    finally:
        gcpause.uninstall_freezer()
        gc.unfreeze()
        gc.set_threshold(*before)
