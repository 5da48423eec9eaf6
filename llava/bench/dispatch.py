"""Counting what a forward asks of the device: operator calls, host reads of device values, allocations.

Timings on a shared CPU are noisy; these counts are not. :func:`count_dispatch` runs a function
under a ``TorchDispatchMode`` that sees every aten operator call:

* ``ops``: operator calls (each a kernel launch on a GPU, views included);
* ``syncs``: reads of a device value by the host (``.item()``, ``int()``, ``bool()`` on a tensor
  dispatch ``_local_scalar_dense``; ``.tolist()``, counted by wrapping it during the run). On a GPU
  each one waits for every queued kernel;
* ``allocations``: operator outputs whose storage is none of the inputs' (views and in-place results
  are not allocations).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

SYNC_OPS = {"_local_scalar_dense"}


class _Counter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts = {"ops": 0, "syncs": 0, "allocations": 0}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.counts["ops"] += 1
        if func.overloadpacket.__name__ in SYNC_OPS:
            self.counts["syncs"] += 1
        inputs = {_storage(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        self.counts["allocations"] += sum(1 for t in tree_leaves(out)
                                          if isinstance(t, torch.Tensor) and _storage(t) not in inputs)
        return out


def _storage(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


@contextlib.contextmanager
def _counting_tolist(counter: _Counter):
    original = torch.Tensor.tolist

    def tolist(self):
        counter.counts["syncs"] += 1
        return original(self)

    torch.Tensor.tolist = tolist
    try:
        yield
    finally:
        torch.Tensor.tolist = original


def count_dispatch(fn: Callable[[], Any]) -> dict[str, int]:
    """``{"ops", "syncs", "allocations"}`` of one call of ``fn`` (see the module docstring)."""
    counter = _Counter()
    with _counting_tolist(counter), counter:
        fn()
    return dict(counter.counts)
