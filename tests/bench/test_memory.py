"""Peak memory of a piece of work, measured in a forked process."""

from __future__ import annotations

import sys

import pytest
import torch

from llava.bench.memory import peak_rss_growth_mb

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def touch(megabytes: int) -> None:
    torch.ones(megabytes * 2**20 // 4)  # float32, written: resident


def test_the_growth_follows_what_the_work_allocates_and_a_failure_is_none():
    small, large = peak_rss_growth_mb(lambda: touch(1)), peak_rss_growth_mb(lambda: touch(200))
    assert small is not None and large is not None
    assert small < 30 and 180 < large < 260
    assert peak_rss_growth_mb(lambda: 1 / 0) is None


def test_the_parent_keeps_nothing_of_the_child():
    before = torch.zeros(1)
    peak_rss_growth_mb(lambda: before.add_(1))
    assert before.item() == 0  # the child's writes stay in the child


def test_a_child_that_hangs_is_killed_after_the_timeout():
    import time

    started = time.time()
    assert peak_rss_growth_mb(lambda: time.sleep(60), timeout=1) is None
    assert time.time() - started < 10
