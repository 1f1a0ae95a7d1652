"""BatchPacer: a forming batch waits as long as the running batch still needs, within the configured bound."""

from __future__ import annotations

import pytest

from services.scoring.pacing import BatchPacer


def test_an_idle_replica_starts_a_batch_at_once():
    assert BatchPacer(max_wait_s=0.2).wait_s(now=5.0) == 0.0


def test_a_forming_batch_waits_for_the_running_one_to_end_and_no_longer():
    pacer = BatchPacer(max_wait_s=0.5)
    pacer.started(now=0.0)
    pacer.finished(now=0.2)                 # batches take about 0.2 s
    assert pacer.wait_s(now=0.3) == 0.0     # idle again
    pacer.started(now=10.0)
    assert pacer.wait_s(now=10.05) == pytest.approx(0.15)
    assert pacer.wait_s(now=10.19) == pytest.approx(0.01)


def test_the_configured_wait_bounds_the_wait_and_covers_an_overrunning_batch():
    pacer = BatchPacer(max_wait_s=0.1)
    pacer.started(now=0.0)
    assert pacer.wait_s(now=0.0) == pytest.approx(0.1)  # no history yet: the bound
    pacer.finished(now=1.0)
    pacer.started(now=2.0)
    assert pacer.wait_s(now=2.5) == pytest.approx(0.1)  # 0.5 s left, but at most the bound
    assert pacer.wait_s(now=3.5) == pytest.approx(0.1)  # past the expected end: one more bound, not 0


def test_the_expected_duration_follows_recent_batches():
    pacer = BatchPacer(max_wait_s=10.0, smoothing=0.5)
    for start, took in ((0.0, 0.2), (1.0, 0.4)):
        pacer.started(now=start)
        pacer.finished(now=start + took)
    pacer.started(now=5.0)
    assert pacer.wait_s(now=5.0) == pytest.approx(0.3)
    pacer.finished(now=5.1)
    pacer.finished(now=5.2)  # a second finish without a start changes nothing
    assert pacer.wait_s(now=6.0) == 0.0
