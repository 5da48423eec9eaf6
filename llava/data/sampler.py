"""LLaVA's modality- and length-grouped sampler (``--group_by_modality_length``).

Batches hold either image samples or text-only samples, and samples of similar length, so little
compute goes to padding and no step mixes a vision-heavy batch with a text one:

1. image samples (``modality_lengths > 0``) and text-only samples (``< 0``) are shuffled separately
   with a ``torch.Generator`` seeded ``seed + epoch``;
2. each is cut into megabatches of ``batch_size * world_size`` samples; inside a megabatch the
   samples are sorted by length (longest first) and dealt into ``world_size`` per-rank batches of
   ``batch_size`` with balanced total length;
3. the full megabatches of both modalities are shuffled together; the leftovers (the last partial
   megabatch of each modality) form one final mixed megabatch.

The order is laid out as the data loader reads it: megabatch after megabatch, rank 0's batch then
rank 1's... (accelerate gives each rank its own ``batch_size`` slice of every ``world_size``
consecutive batches). Every index appears exactly once per epoch; the order depends only on
``seed`` and the epoch. With a single modality this is plain length grouping.

Example::

    sampler = ModalityLengthGroupedSampler(batch_size=16, world_size=8, modality_lengths=dataset.modality_lengths)
    sampler.set_epoch(epoch)
    order = list(sampler)
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class ModalityLengthGroupedSampler(Sampler[int]):
    """Yields dataset indices grouped by modality and length (see the module docstring)."""

    def __init__(self, batch_size: int, world_size: int, modality_lengths: list[int], seed: int = 0):
        if batch_size < 1 or world_size < 1:
            raise ValueError(f"batch_size ({batch_size}) and world_size ({world_size}) must be >= 1")
        self.batch_size = batch_size
        self.world_size = world_size
        self.modality_lengths = [int(length) for length in modality_lengths]
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` (the generator is seeded ``seed + epoch``)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.modality_lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order())

    def order(self) -> list[int]:
        """This epoch's index order."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        size = self.batch_size * self.world_size
        image = [i for i, length in enumerate(self.modality_lengths) if length > 0]
        text = [i for i, length in enumerate(self.modality_lengths) if length <= 0]
        full, leftovers = [], []
        for indices in (image, text):
            shuffled = [indices[j] for j in torch.randperm(len(indices), generator=generator).tolist()]
            cut = len(shuffled) - len(shuffled) % size
            full += [shuffled[start:start + size] for start in range(0, cut, size)]
            leftovers.append(shuffled[cut:])
        megabatches = [full[j] for j in torch.randperm(len(full), generator=generator).tolist()]
        order = [index for megabatch in megabatches for index in self._deal(megabatch)]
        # the leftovers: each modality sorted by length, image ones first, so at most one batch mixes them
        for rest in leftovers:
            order += sorted(rest, key=self._length, reverse=True)
        return order

    def _length(self, index: int) -> int:
        return abs(self.modality_lengths[index])

    def _deal(self, megabatch: list[int]) -> list[int]:
        """A full megabatch sorted longest first, dealt into ``world_size`` batches of balanced total length."""
        batches: list[list[int]] = [[] for _ in range(self.world_size)]
        totals = [0] * self.world_size
        for index in sorted(megabatch, key=self._length, reverse=True):
            rank = min((r for r in range(self.world_size) if len(batches[r]) < self.batch_size),
                       key=lambda r: totals[r])
            batches[rank].append(index)
            totals[rank] += self._length(index)
        return [index for batch in batches for index in batch]
