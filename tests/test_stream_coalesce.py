"""CallCoalescer: frames of one model go to the Scorer in fuller calls, never held past the linger."""

from __future__ import annotations

import pytest

from services.scoring.coalesce import CallCoalescer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_call_goes_as_soon_as_it_is_full_and_keeps_arrival_order():
    calls = CallCoalescer[int](max_size=3, linger_s=10.0, clock=Clock())
    assert calls.add("a/v1", 1) is None and calls.add("a/v1", 2) is None
    assert calls.add("a/v1", 3) == [1, 2, 3]
    assert len(calls) == 0 and calls.wait_s() is None


def test_models_are_never_mixed_in_one_call():
    clock = Clock()
    calls = CallCoalescer[str](max_size=2, linger_s=0.05, clock=clock)
    calls.add("a/v1", "a1")
    calls.add("b/v1", "b1")
    assert calls.add("a/v1", "a2") == ["a1", "a2"]
    clock.now += 0.06
    assert calls.due() == [["b1"]]


def test_a_part_full_call_waits_exactly_its_linger_counted_from_its_first_frame():
    clock = Clock()
    calls = CallCoalescer[int](max_size=8, linger_s=0.05, clock=clock)
    calls.add("a/v1", 1)
    clock.now += 0.03
    calls.add("a/v1", 2)
    assert calls.due() == [] and calls.wait_s() == pytest.approx(0.02)
    clock.now += 0.019
    assert calls.due() == []
    clock.now += 0.002
    assert calls.due() == [[1, 2]]
    assert calls.due() == [] and len(calls) == 0


def test_forcing_sends_everything_held_and_zero_linger_holds_nothing():
    calls = CallCoalescer[int](max_size=8, linger_s=5.0, clock=Clock())
    calls.add("a/v1", 1)
    calls.add("b/v1", 2)
    assert sorted(calls.due(force=True)) == [[1], [2]] and len(calls) == 0
    eager = CallCoalescer[int](max_size=8, linger_s=0.0, clock=Clock())
    eager.add("a/v1", 1)
    assert eager.wait_s() == 0.0 and eager.due() == [[1]]


def test_nagle_rule_a_call_begun_with_nothing_out_goes_at_once_with_its_poll():
    clock = Clock()
    out = {"calls": 0}
    calls = CallCoalescer[int](max_size=8, linger_s=0.1, clock=clock, busy=lambda: out["calls"] > 0)
    calls.add("a/v1", 1)
    calls.add("a/v1", 2)  # same poll
    assert calls.wait_s() == 0.0 and calls.due() == [[1, 2]]
    out["calls"] = 1
    calls.add("a/v1", 3)
    clock.now += 0.05
    assert calls.due() == [] and calls.wait_s() == pytest.approx(0.05)  # begun while a call is out: fill it
    out["calls"] = 0
    assert calls.due() == []  # the earlier call came back: this one still waits out its linger
    clock.now += 0.06
    assert calls.due() == [[3]]
    calls.add("b/v1", 4)
    assert calls.due() == [[4]] and len(calls) == 0


def test_without_busy_predicate_every_part_full_call_lingers():
    calls = CallCoalescer[int](max_size=8, linger_s=0.1, clock=Clock())
    calls.add("a/v1", 1)
    assert calls.due() == [] and calls.wait_s() == pytest.approx(0.1)


@pytest.mark.parametrize("max_size, linger_s", [(0, 0.1), (4, -0.1)])
def test_bad_settings_are_refused(max_size, linger_s):
    with pytest.raises(ValueError):
        CallCoalescer[int](max_size=max_size, linger_s=linger_s)
