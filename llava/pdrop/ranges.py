"""Named ranges around the decoder's own work (``pdrop/rank``, ``pdrop/compact``), for ``llava.bench``.

A range costs nothing unless someone is looking: under ``torch.profiler`` it is a
``record_function`` range (on a GPU the benchmark reads the kernel time launched inside it); inside
a :class:`RangeTimer` its wall-clock seconds are added up on the host (on a CPU, where the
profiler's own cost per operator call, a few microseconds, would weigh a range by its number of
calls rather than by its time).
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext

import torch


class RangeTimer:
    """Wall-clock seconds per range name while active (``with RangeTimer() as timer: ...``; not nested).

    Attributes:
        seconds: ``{name: seconds}`` summed over every entry of the range while the timer was active.
    """

    active: "RangeTimer | None" = None

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def __enter__(self) -> "RangeTimer":
        if RangeTimer.active is not None:
            raise RuntimeError("a RangeTimer is already active")
        RangeTimer.active = self
        return self

    def __exit__(self, *exc) -> None:
        RangeTimer.active = None


@contextmanager
def _timed(timer: RangeTimer, name: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        timer.seconds[name] += time.perf_counter() - start


def profiled(name: str):
    """A context for the range ``name``: a profiler range when a profiler runs, a timed range inside a
    :class:`RangeTimer`, nothing otherwise."""
    if torch.autograd.profiler._is_profiler_enabled:
        return torch.profiler.record_function(name)
    if RangeTimer.active is not None:
        return _timed(RangeTimer.active, name)
    return nullcontext()
