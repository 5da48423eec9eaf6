"""The decoder's named ranges: timed on the host inside a RangeTimer, free otherwise."""

import time

import pytest
import torch

from llava.pdrop import PDropConfig
from llava.pdrop.ranges import RangeTimer, profiled

from ..conftest import make_batch, tiny_model
from .test_reference_parity import INFERENCE_SAMPLES


def test_timer_adds_up_the_wall_clock_time_of_each_range():
    with RangeTimer() as timer:
        for _ in range(2):
            with profiled("a"):
                time.sleep(0.01)
        with profiled("b"):
            pass
    assert timer.seconds["a"] >= 0.02 and timer.seconds["b"] < 0.01
    with profiled("a"):  # no timer active: nothing is recorded anywhere
        pass
    assert RangeTimer.active is None and set(timer.seconds) == {"a", "b"}


def test_timers_do_not_nest():
    with RangeTimer():
        with pytest.raises(RuntimeError, match="already active"):
            RangeTimer().__enter__()


def test_a_prefill_enters_rank_and_compact_at_every_boundary():
    model = tiny_model(PDropConfig([1, 2, 3], [0.5, 0.25, 0.125]))
    batch = make_batch(INFERENCE_SAMPLES, "left")
    with torch.no_grad(), RangeTimer() as timer:
        model(**batch)
    assert set(timer.seconds) == {"pdrop/rank", "pdrop/compact"}
    assert all(seconds > 0 for seconds in timer.seconds.values())
