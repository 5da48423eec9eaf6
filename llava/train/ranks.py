"""What the training processes tell each other outside the training step.

accelerate's own collectives (``gather_object``, ``broadcast_object_list``) do nothing when it
believes it runs one process, which it does for CPU processes on gloo (see
docs/environment-notes); these go through ``torch.distributed`` whenever a process group exists.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, number of processes); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_from_ranks(value: Any) -> list:
    """``[value of rank 0, value of rank 1, ...]`` on every rank (picklable values; ``[value]`` alone)."""
    _, world = rank_and_world()
    if world == 1:
        return [value]
    values = [None] * world
    dist.all_gather_object(values, value)
    return values
