"""The offset tracker: commit only past a contiguous run of acknowledged frames."""

from __future__ import annotations

import random

import pytest

from services.scoring.offsets import OffsetTracker


def test_commit_waits_for_every_earlier_frame_of_the_partition():
    tracker = OffsetTracker()
    for offset in range(5):
        tracker.start("p0", offset)
    assert tracker.committable() == {}

    tracker.done("p0", 2)
    tracker.done("p0", 1)
    assert tracker.committable() == {}, "offset 0 is still running"

    tracker.done("p0", 0)
    assert tracker.committable() == {"p0": 3}, "0, 1 and 2 are done: the next record to read is 3"
    assert tracker.in_flight() == 2


def test_partitions_are_independent():
    tracker = OffsetTracker()
    tracker.start("a", 10)
    tracker.start("b", 7)
    tracker.start("b", 8)
    tracker.done("b", 7)
    assert tracker.committable() == {"b": 8}
    assert tracker.in_flight("a") == 1 and tracker.in_flight("b") == 1


def test_a_committed_position_is_not_offered_again_until_it_moves():
    tracker = OffsetTracker()
    tracker.start("p", 0)
    tracker.start("p", 1)
    tracker.done("p", 0)
    tracker.mark_committed(tracker.committable())
    assert tracker.committable() == {}
    tracker.done("p", 1)
    assert tracker.committable() == {"p": 2}


def test_gaps_in_offsets_do_not_block_the_commit():
    # compacted topics and transaction markers leave holes between record offsets
    tracker = OffsetTracker()
    for offset in (3, 9, 40):
        tracker.start("p", offset)
    for offset in (40, 3, 9):
        tracker.done("p", offset)
    assert tracker.committable() == {"p": 41}
    assert tracker.in_flight() == 0


def test_unknown_duplicate_and_forgotten_acknowledgements_change_nothing():
    tracker = OffsetTracker()
    tracker.start("p", 0)
    tracker.start("p", 1)
    assert tracker.done("p", 5) is False
    assert tracker.done("q", 0) is False
    assert tracker.done("p", 1) is True
    assert tracker.done("p", 1) is False, "a second acknowledgement of the same record"
    assert tracker.committable() == {}

    tracker.forget(["p"])
    assert tracker.done("p", 0) is False, "the partition was revoked: a late result must not commit for the new owner"
    assert tracker.committable() == {} and tracker.in_flight() == 0


def test_rereading_a_partition_needs_forget_first():
    tracker = OffsetTracker()
    tracker.start("p", 5)
    with pytest.raises(ValueError, match="forget"):
        tracker.start("p", 5)
    tracker.forget(["p"])
    tracker.start("p", 5)
    assert tracker.in_flight() == 1


def test_random_completion_order_never_commits_past_a_running_frame():
    rng = random.Random(0)
    tracker = OffsetTracker()
    offsets = list(range(200))
    for offset in offsets:
        tracker.start("p", offset)
    finished: set[int] = set()
    committed = 0
    for offset in rng.sample(offsets, len(offsets)):
        tracker.done("p", offset)
        finished.add(offset)
        position = tracker.committable().get("p")
        if position is not None:
            assert position > committed
            tracker.mark_committed({"p": position})
            committed = position
        lowest_running = min(set(offsets) - finished, default=len(offsets))
        assert committed == lowest_running, "the commit is exactly at the first frame without a result"
    assert committed == 200
